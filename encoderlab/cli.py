"""encoderlab command line: one sub-command per verb; parse, call the library, print."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from encoderlab import config as C
from encoderlab.analysis import render as R
from encoderlab.errors import EncoderlabError

# pipes and CI logs get a wide fixed width instead of rich's 80-column fallback
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

QUICKSTART = Path(__file__).parent / "presets" / "quickstart.toml"


def _store(args):
    from encoderlab.store.runs import RunStore
    return RunStore(args.store)


# -- printing ------------------------------------------------------------------------------------


def print_rows(rows: list[dict], columns: list[tuple], fmt: str = "table", title: str = "") -> None:
    """rows as a rich table, or Markdown / CSV / JSON for machines (see encoderlab.analysis.render)."""
    R.emit(R.Table(rows, columns, title=title), fmt, console)


EPOCH_COLUMNS = [("epoch", "epoch"), ("step", "step"), ("train_loss", "train loss"), ("train_acc", "train acc"),
                 ("val_loss", "val loss"), ("val_acc", "val acc"), ("val_f1", "val F1"), ("elapsed", "elapsed s")]


def print_run_summary(run, fmt: str = "table") -> None:
    from encoderlab.analysis.tables import epoch_table, final_scores
    info = run.info
    if info.get("task") in ("multilabel", "regression"):
        from encoderlab.cli_tasks import print_task_summary
        return print_task_summary(run, fmt)
    rows = epoch_table(run)
    final = final_scores(run)
    if fmt == "json":
        print(json.dumps({"run": {**info, "status": run.status}, "epochs": rows, "final": final}, indent=2))
        return
    print_rows(rows, EPOCH_COLUMNS, fmt, title=f"run {run.id}")
    data = info.get("data", {})
    top = data.get("majority_class")
    for split, key in (("final_validation", "majority_baseline_validation"), ("test", "majority_baseline_test")):
        if split not in final:
            continue
        m, base = final[split], data.get(key)
        name = "validation" if split == "final_validation" else "test"
        line = f"{name} accuracy [bold]{m['accuracy']:.4f}[/]  macro-F1 {m['macro_f1']:.4f}"
        if base is not None:
            line += f"   majority-class baseline {base:.4f} (always '{escape(str(top))}')"
        console.print(line)
    if "test" in final:
        console.print(f"scores of the best checkpoint ({final['test'].get('checkpoint', '-')}), chosen on "
                      f"validation {info.get('best_metric')}")


# -- verbs ---------------------------------------------------------------------------------------

def cmd_run(args, cfg: C.ExperimentConfig | None = None):
    from encoderlab.train.fit import fit
    cfg = cfg or C.load(args.file, args.overrides)
    store = _store(args)

    def on_event(ev):
        if ev["split"] == "validation" and not args.quiet:
            m = ev["metrics"]
            from encoderlab.tasks import score_line
            console.print(f"  epoch {ev['epoch']:.2f} step {ev['step']}: val loss {m['loss']:.4f} {score_line(m)}")

    if not args.quiet:
        say_machine(cfg)
    try:
        run = fit(cfg, store, callback=on_event, progress=not args.quiet)
    except KeyboardInterrupt:
        last = store.list(limit=1)
        rid = last[-1]["id"] if last else "RUN"
        err.print(f"[yellow]interrupted[/]; continue with: encoderlab resume {rid}")
        sys.exit(130)
    _after_run(args, run)


TIME_PARTS = (("startup", "start-up"), ("setup", "setup"), ("train", "train"), ("eval", "validation"),
              ("test", "test"), ("checkpoint", "checkpoints"), ("finish", "save"))


def time_breakdown(timing: dict) -> str:
    """'wall 93.2 s = start-up 3.1 + setup 9.0 + train 54.0 + ...' from run.json's timing."""
    parts = [(label, timing[k]) for k, label in TIME_PARTS if timing.get(k)]
    other = timing.get("wall", 0.0) - sum(v for _, v in parts)
    if other > 0.05:
        parts.append(("other", other))
    return f"wall {timing.get('wall', 0.0):.1f} s = " + " + ".join(f"{label} {v:.1f}" for label, v in parts)


def say_machine_and_time(info: dict) -> None:
    if info.get("precision_reason"):
        console.print(f"ran at precision {escape(info['precision_reason'])}; {info.get('threads')} thread(s)",
                      soft_wrap=True)
    if info.get("timing"):
        console.print(f"time: {time_breakdown(info['timing'])}", soft_wrap=True)


def say_machine(cfg: C.ExperimentConfig) -> None:
    """The precision and threads the run will use, and why (measured once per machine)."""
    from encoderlab import machine
    console.print(f"[dim]{escape(machine.describe(cfg.train.precision, cfg.train.threads, cfg.train.device))}[/]",
                  soft_wrap=True)


def print_findings(findings, show_info: bool = False) -> None:
    style = {"error": "bold red", "warning": "yellow", "info": "dim"}
    shown = [f for f in findings if show_info or f.severity != "info"]
    if not shown:
        console.print("diagnostics: no problems found")
        return
    for f in shown:
        console.print(f"[{style[f.severity]}]{f.severity}[/] {escape(f.title)}")
        console.print(f"    evidence: {escape(f.evidence)}")
        if f.fix:
            console.print(f"    fix: {escape(f.fix)}")


def _after_run(args, run):
    from encoderlab.analysis import diagnose
    findings = diagnose.write(run)
    print_run_summary(run, "json" if args.json else "table")
    if not args.json:
        print_findings(findings)
        console.print(f"stored in [bold]{run.dir}[/]")
        console.print(f"look again: encoderlab show {run.id}   |   label a file: "
                      f"encoderlab predict {run.id} input.csv -o preds.csv")


def cmd_quickstart(args):
    cfg = C.load(QUICKSTART, args.overrides)
    if not args.quiet:
        console.print("[bold]encoderlab quickstart[/]: fine-tune MiniLM-L6 (pretrained) on builtin:"
                      f"{cfg.data.source.split(':')[-1]} (WordNet gloss -> lexicographer category); "
                      f"{cfg.train.epochs} epochs, {cfg.data.max_train or 'all'} training examples")
    args.file = None
    cmd_run(args, cfg)


def cmd_resume(args):
    from encoderlab import kinds
    store = _store(args)
    run = store.get(args.run)
    if run.status == "completed":
        console.print(f"run {run.id} is already completed")
        return
    kind = kinds.require(run, "resume")
    events, after = RESUME_OUTPUT[kind.name]
    try:
        run = kind.load_recipe()(run.config(), store, resume=run, callback=events(args) if events else None,
                                 progress=not args.quiet)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]; continue with: encoderlab resume {run.id}")
        sys.exit(130)
    after(args, run)


# -- pretraining and tokenizers ------------------------------------------------------------------

PRETRAIN_COLUMNS = [("epoch", "epoch"), ("step", "step"), ("train_mlm_loss", "train MLM loss"),
                    ("mlm_loss", "held-out MLM loss"), ("mlm_acc", "masked-token acc"),
                    ("pair_acc", "pair acc"), ("top1_share", "top-1 share"), ("elapsed", "elapsed s")]


def print_warning(w: dict) -> None:
    console.print(f"[yellow]warning[/] {escape(w['title'])}")
    console.print(f"    evidence: {escape(w['evidence'])}")
    console.print(f"    fix: {escape(w['fix'])}")


def _pretrain_events(args):
    def on_event(ev):
        if ev["split"] == "warning":
            print_warning(ev["detail"])
        elif ev["split"] == "heldout" and not args.quiet:
            m = ev["metrics"]
            pair = f", pair acc {m['pair_accuracy']:.4f}" if "pair_accuracy" in m else ""
            console.print(f"  epoch {ev['epoch']:.2f} step {ev['step']}: held-out MLM loss {m['mlm_loss']:.4f}, "
                          f"masked-token acc {m['mlm_accuracy']:.4f}{pair}")
    return on_event


def print_pretrain_summary(run, fmt: str = "table") -> None:
    from encoderlab.analysis.tables import final_scores, pretrain_table
    rows = pretrain_table(run)
    final = final_scores(run).get("final_heldout")
    if fmt == "json":
        print(json.dumps({"run": {**run.info, "status": run.status}, "epochs": rows, "final": final}, indent=2))
        return
    columns = [c for c in PRETRAIN_COLUMNS if c[0] != "pair_acc" or any(r.get("pair_acc") is not None for r in rows)]
    print_rows(rows, columns, fmt, title=f"pretraining run {run.id}")
    if final and fmt == "table":
        H = run.info.get("data", {}).get("unigram_entropy")
        pair = f", {run.info['data']['objective'].split('+')[1].upper()} accuracy {final['pair_accuracy']:.4f}" \
            if "pair_accuracy" in final else ""
        ref = f" (unigram entropy of the corpus: {H:.4f})" if H is not None else ""
        console.print(f"held-out MLM loss [bold]{final['mlm_loss']:.4f}[/]{ref}, masked-token accuracy "
                      f"[bold]{final['mlm_accuracy']:.4f}[/]{pair}; best checkpoint {final.get('checkpoint', '-')}",
                      soft_wrap=True)


def _after_pretrain(args, run):
    from encoderlab.analysis import diagnose
    diagnose.write(run)
    print_pretrain_summary(run, "json" if args.json else "table")
    if not args.json:
        console.print(f"stored in [bold]{run.dir}[/] (model/ loads with AutoModel.from_pretrained)", soft_wrap=True)
        console.print(f"fine-tune it: encoderlab run exp.toml model.path=run:{run.id}", soft_wrap=True)
        console.print(f"the same architecture from random init: model.path=run:{run.id} model.init=random",
                      soft_wrap=True)


def cmd_pretrain(args):
    from encoderlab.train.pretrain import pretrain
    cfg = C.load(args.file, args.overrides)
    store = _store(args)
    try:
        if not args.quiet:
            say_machine(cfg)
        run = pretrain(cfg, store, callback=_pretrain_events(args), progress=not args.quiet)
    except KeyboardInterrupt:
        last = store.list(limit=1)
        err.print(f"[yellow]interrupted[/]; continue with: encoderlab resume {last[-1]['id'] if last else 'RUN'}")
        sys.exit(130)
    _after_pretrain(args, run)


# how `resume` reports progress and the result, per resumable kind: (event printer, after-run printer)
RESUME_OUTPUT = {"classification": (None, _after_run), "multilabel": (None, _after_run), "regression": (None, _after_run),
                 "pretraining": (_pretrain_events, _after_pretrain)}


def cmd_tokenizer_train(args):
    from encoderlab.data.corpus import read_corpus
    from encoderlab.encode import vocab as V
    corpus = read_corpus(args.corpus, text=args.text, text_pair=args.text_pair)
    tok = V.train(corpus, args.kind, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                  lowercase=not args.cased, unknown_ids=args.unknown_ids, max_length=args.max_length)
    folder = V.save(tok, args.output)
    d = {**V.describe(tok, corpus), "folder": str(folder)}
    if args.format == "json":
        print(json.dumps(d, indent=2))
        return
    if args.format != "table":
        print_rows([d], [(k, k) for k in d], args.format)
        return
    example = corpus.sentences[0]
    tokens = tok.convert_ids_to_tokens(tok(example)["input_ids"])
    what = {"wordpiece": "a WordPiece tokenizer", "bpe": "a byte-level BPE tokenizer",
            "unigram": "a Unigram tokenizer", "ids": "an ID vocabulary"}[args.kind]
    console.print(f"trained {what}: {d['vocab_size']:,} tokens (5 special) from {d['sentences']:,} lines "
                  f"in {d['documents']:,} document{'s' if d['documents'] != 1 else ''}", markup=False)
    console.print(f"{d['tokens_per_sentence']:.1f} tokens per line; [UNK] is {d['unk_share']:.2%} of the tokens"
                  + (f"; unknown IDs: {d['unknown_ids']}" if d["unknown_ids"] else ""), markup=False)
    shown = example if len(example) <= 40 else example[:37] + "..."
    console.print(f"e.g. {shown!r} -> {' '.join(tokens[:12])}{' ...' if len(tokens) > 12 else ''}", markup=False)
    console.print(f"saved to {folder} (tokenizer.json + tokenizer_config.json)", markup=False, soft_wrap=True)
    console.print(f"use it: model.tokenizer = \"{folder}\"", markup=False, soft_wrap=True)


def cmd_sweep(args):
    from encoderlab import sweep as S
    store = _store(args)
    points = S.expand(args.file, args.overrides)
    steps = S.plan(store, points)
    if args.dry_run:
        rows = [{"n": i + 1, "name": p.cfg.name, "group": p.cfg.group, "action": a,
                 "run": r.id if r else "-", **{k: v for k, v in p.varied.items()}}
                for i, (p, a, r) in enumerate(steps)]
        keys = list(points[0].varied) if points else []
        print_rows(rows, [("n", "#"), ("name", "name"), *[(k, k) for k in keys], ("action", "action"),
                          ("run", "run")], args.format)
        todo = sum(a in ("start", "resume") for _, a, _ in steps)
        console.print(f"{len(points)} runs in group '{points[0].cfg.group if points else '-'}': "
                      f"{todo} to run, {len(points) - todo} done or busy")
        return

    def on_point(i, n, point, action):
        verb = {"skip": "done, skipping", "busy": "running elsewhere, skipping",
                "resume": "resuming", "start": "starting"}[action]
        console.rule(f"[bold]sweep {i + 1}/{n}[/] {point.label}: {verb}")

    try:
        runs = S.run_sweep(points, store, progress=not args.quiet, on_point=on_point)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]; re-run `encoderlab sweep {args.file}` to continue "
                  "(finished runs are skipped, the interrupted one resumes)")
        sys.exit(130)
    console.print(f"sweep complete: {len(runs)} runs in group '{points[0].cfg.group}'. "
                  f"Compare them: encoderlab compare --group {points[0].cfg.group}")


def cmd_eval(args):
    from encoderlab.evaluate import eval_checkpoints
    run = _store(args).get(args.run)
    which = args.checkpoints
    if which not in ("all", "best", "last"):
        which = [int(x.removeprefix("step-")) for x in which.split(",")]
    rows = eval_checkpoints(run, split=args.split, which=which, progress=args.format == "table",
                            force=args.force)
    for r in rows:
        r["note"] = ("best" if r.get("best") else "") + ("" if r.get("logged", True) else " (stored before)")
    from encoderlab.tasks import EVENT_METRICS, SHORT, family
    metrics = EVENT_METRICS[family(run.info.get("task", ""))]
    print_rows(rows, [("checkpoint", "checkpoint"), ("epoch", "epoch")]
               + [(k, f"{args.split} {SHORT.get(k, k)}") for k in metrics] + [("note", "")],
               args.format, title=f"run {run.id}: checkpoints on {args.split}")


def cmd_lrfind(args):
    from encoderlab.train.lrfind import lr_find
    cfg = C.load(args.file, args.overrides)
    result = lr_find(cfg, start=args.start, end=args.end, steps=args.steps, progress=True,
                     store_root=_store(args).root)
    out = Path(args.out or f"lrfind-{cfg.name}")
    json_path, png_path = result.save(out)
    console.print(result.summary(), markup=False)
    console.print(f"plot: {png_path}   data: {json_path}")
    console.print(f"use it: encoderlab run {args.file} train.lr={result.suggested:.2g}")


def cmd_runs(args):
    rows = _store(args).list(name=args.name, status=args.status, group=args.group, limit=args.limit)
    cols = [("id", "id"), ("name", "name"), ("status", "status"), ("model", "model"), ("init", "init"),
            ("epochs_done", "epochs"), ("best_value", "best val"), ("test_accuracy", "test acc"),
            ("created", "created")]
    print_rows(rows, cols, args.format)


def cmd_show(args):
    from encoderlab import kinds
    run = _store(args).get(args.run)
    kinds.view(run)(run, args)


def show_header(run, args) -> None:
    """What `show` prints first for every kind: id, status, times, lineage, message, config."""
    info = run.info
    console.print(f"[bold]{run.id}[/]  status {run.status}  created {info['created']}  "
                  f"finished {info.get('finished') or '-'}")
    if info.get("parent"):
        console.print(f"derived from run {info['parent']}", markup=False)
    if info.get("message"):
        console.print(f"message: {info['message']}")
    say_machine_and_time(info)
    console.rule("resolved config" if args.config else "config (differences from the defaults; --config for all)")
    if args.config:
        console.print((run.dir / "config.toml").read_text().rstrip(), markup=False)
    else:
        for k, v in C.diff(run.config(), C.ExperimentConfig()).items():
            console.print(f"{k} = {json.dumps(v)}", markup=False)


def show_classification(run, args):
    """`show` of a classification (or derived) run: data, per-epoch history, diagnostics."""
    if args.format == "json":
        print_run_summary(run, "json")
        return
    show_header(run, args)
    data = run.info.get("data")
    if data and "mean_tokens" in data:     # a distilled run's summary holds sizes and baselines only
        console.rule("data")
        sizes = data["sizes"]
        console.print(f"task {data['task']}, {data['num_labels']} labels; train {sizes['train']}, "
                      f"validation {sizes['validation']}, test {sizes['test']}; mean {data['mean_tokens']:.1f} "
                      f"tokens; {data['train_padding_waste']:.1%} padding in train batches; "
                      f"{data['parameters']:,} parameters")
    console.rule("history")
    print_run_summary(run, args.format)
    from encoderlab.analysis import diagnose
    console.rule("diagnostics")
    print_findings(diagnose.load_or_compute(run), show_info=True)
    if args.per_class:
        from encoderlab.analysis.tables import final_scores
        test = final_scores(run).get("test")
        if test:
            rows = [{"label": k, **v} for k, v in test["per_class"].items()]
            print_rows(rows, [("label", "label"), ("precision", "precision"), ("recall", "recall"),
                              ("f1", "F1"), ("support", "support")], args.format, title="test, per class")


def show_pretraining(run, args):
    """`show` of a pretraining run: corpus, held-out history, diagnostics."""
    from encoderlab.analysis import diagnose
    if args.format != "table":
        print_pretrain_summary(run, args.format)
        return
    show_header(run, args)
    d = run.info.get("data") or {}
    if d:
        console.rule("corpus")
        console.print(f"{d['objective']}; {d['sentences']:,} lines in {d['documents']:,} documents -> "
                      f"{d['sizes']['train']:,} training / {d['sizes']['heldout']:,} held-out examples "
                      f"({d['pairs']['train']:,} / {d['pairs']['heldout']:,} sentence pairs); vocabulary "
                      f"{d['vocab_size']:,}; unigram entropy {d['unigram_entropy']:.3f}; {d['duplicate_share']:.1%} "
                      f"duplicate lines; {d['parameters']:,} parameters", markup=False)
    console.rule("history")
    print_pretrain_summary(run)
    console.rule("diagnostics")
    print_findings(diagnose.load_or_compute(run), show_info=True)


def cmd_predict(args):
    from encoderlab import predict as P
    from encoderlab.errors import ConfigError
    *refs, input_path = args.targets
    store = _store(args)
    if args.group:
        from encoderlab.analysis.select import select
        runs = select(store, group=args.group, ids=refs or None)
        if not runs:
            raise ConfigError(f"no completed runs in group '{args.group}' (see `encoderlab runs --group ...`)")
    elif refs:
        runs = list({r.id: r for r in (store.get(ref) for ref in refs)}.values())
    else:
        raise ConfigError("name the run(s) before the input file, or --group G: "
                          "encoderlab predict RUN [RUN ...] input.csv")
    df, scores = P.predict(runs if len(runs) > 1 else runs[0], input_path, batch_size=args.batch_size,
                           text=args.text, text_pair=args.text_pair, runtime=args.runtime)
    out = console if args.output else err   # stdout carries the CSV when there is no -o
    if len(runs) > 1:
        out.print(f"ensemble of {len(runs)} runs (mean of their class probabilities): "
                  + ", ".join(r.id for r in runs), markup=False, soft_wrap=True)
    if args.output:
        P.write(df, args.output)
        console.print(f"wrote {len(df)} predictions to {args.output}")
    else:
        print(df.to_csv(index=False), end="")
    if scores:
        from encoderlab.tasks import score_line
        out.print(f"the input has labels: {score_line(scores)}")
        if "members" in scores:
            accs = list(scores["members"].values())
            out.print(f"single runs: {score_line(scores, first=True)} {min(accs):.4f} .. {max(accs):.4f} "
                      f"(mean {sum(accs) / len(accs):.4f})")


def cmd_config(args):
    if args.reference:
        rows = C.reference()
        print("| key | type | default | meaning |\n|---|---|---|---|")
        for key, tp, default, doc in rows:
            print(f"| `{key}` | {tp} | `{default}` | {doc} |")
        return
    cfg = C.load(args.file, args.overrides)
    print(C.to_toml(cfg), end="")


def cmd_datasets(args):
    from encoderlab.data import builtin
    rows = []
    for n in builtin.names():
        d = builtin.get(n)
        rows.append({"name": f"builtin:{n}", "task": d.task, "description": d.description})
    print_rows(rows, [("name", "name"), ("task", "task"), ("description", "description")], args.format)


def cmd_models(args):
    from encoderlab.models import registry
    rows = [{"name": k, "description": v} for k, v in registry.list_models().items()]
    print_rows(rows, [("name", "name"), ("description", "description")], args.format)


# -- parser --------------------------------------------------------------------------------------

def _cmd(sub, name, func, help_, example, **kw):
    p = sub.add_parser(name, help=help_, description=f"{help_}\n\nExample:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    p.set_defaults(func=func)
    return p


def _experiment_flags(p, file_help: str):
    p.add_argument("file", help=file_help)
    p.add_argument("overrides", nargs="*", help="dotted overrides key=value (TOML values)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-eval lines")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _fmt_flag(p):
    p.add_argument("--format", choices=R.FORMATS, default="table", help="output format")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="encoderlab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune, pretrain, compare and store BERT-family encoder experiments.\n\n"
                    "Example:\n  encoderlab quickstart\n  encoderlab run exp.toml train.lr=2e-5 model.init=random")
    ap.add_argument("--store", default=os.environ.get("ENCODERLAB_STORE", "runs"),
                    help="run store folder (default: ./runs or $ENCODERLAB_STORE)")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = _cmd(sub, "quickstart", cmd_quickstart, "fine-tune the bundled MiniLM-L6 on bundled WordNet data",
             "encoderlab quickstart train.epochs=1")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=1")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    ref = textwrap.indent("\n".join(f"{k} = {d}   # {doc}" for k, _, d, doc in C.reference()), "  ")
    p = _cmd(sub, "run", cmd_run, "run one experiment file as a stored run",
             f"encoderlab run exp.toml train.lr=2e-5 model.init=random\n\nSettings (key = default):\n{ref}")
    _experiment_flags(p, "experiment TOML file")

    p = _cmd(sub, "sweep", cmd_sweep, "run every point of an experiment's [sweep] (grid x seeds x folds)",
             "encoderlab sweep examples/pre-vs-npre.toml --dry-run")
    p.add_argument("file", help="experiment TOML file with a [sweep] table")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every point")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what would happen to each")
    p.add_argument("--quiet", action="store_true", help="no per-run progress bars")
    _fmt_flag(p)

    from encoderlab import cli_analysis     # compare, diagnose, report
    cli_analysis.add_verbs(sub, _cmd)

    p = _cmd(sub, "eval", cmd_eval, "re-evaluate stored checkpoints of a run on a split; results join the store",
             "encoderlab eval last --checkpoints all --split test")
    p.add_argument("run")
    p.add_argument("--checkpoints", default="all", help="all | best | last | step numbers, e.g. 100,200")
    p.add_argument("--split", default="validation", choices=["validation", "test"])
    p.add_argument("--force", action="store_true", help="re-evaluate checkpoints already evaluated on this split")
    _fmt_flag(p)

    p = _cmd(sub, "lrfind", cmd_lrfind, "learning-rate range test: loss vs exponentially growing LR, "
             "with a suggested train.lr", "encoderlab lrfind examples/own-file.toml --steps 100")
    p.add_argument("file", help="experiment TOML file")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate")
    p.add_argument("--end", type=float, default=1.0, help="last learning rate (stops earlier on divergence)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps")
    p.add_argument("--out", help="folder for lrfind.json and lrfind.png (default ./lrfind-<name>)")

    p = _cmd(sub, "pretrain", cmd_pretrain, "pretrain an encoder with masked language modelling "
             "(+ NSP / SOP) on your corpus; the run's model fine-tunes as model.path = \"run:ID\"",
             "encoderlab pretrain examples/anon-pretrain.toml train.epochs=1")
    _experiment_flags(p, "experiment TOML file ([data] corpus, [model], [train], [pretrain])")

    p = _cmd(sub, "tokenizer", None, "train a tokenizer or ID vocabulary on your corpus",
             "encoderlab tokenizer train corpus.txt --kind wordpiece --vocab-size 8000 -o my-tokenizer")
    tsub = p.add_subparsers(dest="tokenizer_verb", required=True, metavar="VERB")
    p = _cmd(tsub, "train", cmd_tokenizer_train,
             "train a WordPiece / BPE / Unigram tokenizer, or an ID vocabulary for whitespace-separated "
             "integer tokens; saved in Hugging Face format (AutoTokenizer.from_pretrained loads it)",
             "encoderlab tokenizer train corpus.txt --kind wordpiece --vocab-size 8000 -o my-tokenizer\n"
             "  encoderlab tokenizer train ids.tsv --text tokens --kind ids --unknown-ids error "
             "--min-frequency 1 -o my-ids")
    p.add_argument("corpus", nargs="+", help=".txt files (one sentence per line) or csv/tsv/jsonl/parquet tables")
    p.add_argument("-o", "--output", required=True, help="folder to write the tokenizer to")
    p.add_argument("--kind", default="wordpiece", choices=["wordpiece", "bpe", "unigram", "ids"],
                   help="subword model, or ids: one token per whitespace-separated integer")
    p.add_argument("--vocab-size", type=int, default=0,
                   help="tokens incl. the 5 special ones (default 8000; ids: every frequent-enough ID)")
    p.add_argument("--min-frequency", type=int, default=2, help="keep tokens / IDs seen at least this often")
    p.add_argument("--text", default="text", help="column of a table holding the text (default 'text')")
    p.add_argument("--text-pair", default="", help="a second text column of a table, also read")
    p.add_argument("--cased", action="store_true", help="keep upper case (subword kinds lowercase by default)")
    p.add_argument("--unknown-ids", default="unk", choices=["unk", "error"],
                   help="ids: an ID outside the vocabulary becomes [UNK], or is an error naming file and row")
    p.add_argument("--max-length", type=int, default=512, help="model_max_length stored with the tokenizer")
    _fmt_flag(p)

    p = _cmd(sub, "resume", cmd_resume, "continue an interrupted run from its newest checkpoint",
             "encoderlab resume 20261123-101500-quickstart-1a2b")
    p.add_argument("run", help="run id (a unique prefix or suffix is enough; 'last' = newest)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")

    p = _cmd(sub, "runs", cmd_runs, "list stored runs", "encoderlab runs --name 'quick*' --status completed")
    p.add_argument("--name", help="name pattern (* wildcard)")
    p.add_argument("--status", choices=["running", "completed", "interrupted", "failed"])
    p.add_argument("--group", help="group pattern (* wildcard)")
    p.add_argument("--limit", type=int, default=0, help="only the newest N")
    _fmt_flag(p)

    p = _cmd(sub, "show", cmd_show, "show a run: resolved config, per-epoch table, test metrics",
             "encoderlab show last --per-class")
    p.add_argument("run")
    p.add_argument("--per-class", action="store_true", help="also per-class precision/recall on test")
    p.add_argument("--config", action="store_true", help="print the whole resolved config")
    _fmt_flag(p)

    p = _cmd(sub, "predict", cmd_predict, "label a csv/tsv/jsonl/parquet file with a run's model, or "
             "with an ensemble of runs (mean of class probabilities, e.g. the k fold models of a sweep)",
             "encoderlab predict last input.csv -o preds.csv\n"
             "  encoderlab predict --group anon-kfold input.csv -o preds.csv")
    p.add_argument("targets", nargs="+", metavar="RUN... INPUT",
                   help="run id(s) (none with --group), then the input file")
    p.add_argument("--group", help="ensemble of every completed run of this group (pattern, * wildcard)")
    p.add_argument("-o", "--output", help="output file (.csv, .tsv, .jsonl, .parquet); default stdout")
    p.add_argument("--text", help="text column if it differs from the run's data.text")
    p.add_argument("--text-pair", help="second text column if it differs from the run's data.text_pair")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--runtime", choices=["torch", "torch-int8", "onnx", "onnx-int8"],
                   help="serve with this runtime (default: the run's own; onnx* need `encoderlab export`)")

    p = _cmd(sub, "config", cmd_config, "print a resolved experiment config, or the config reference",
             "encoderlab config exp.toml train.lr=1e-5   |   encoderlab config --reference")
    p.add_argument("file", nargs="?")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--reference", action="store_true", help="every key with type, default and meaning (Markdown)")

    p = _cmd(sub, "datasets", cmd_datasets, "list builtin datasets", "encoderlab datasets")
    _fmt_flag(p)
    p = _cmd(sub, "models", cmd_models, "list builtin models", "encoderlab models")
    _fmt_flag(p)
    from encoderlab import cli_ranking
    cli_ranking.add_verbs(sub, _cmd)
    from encoderlab import cli_cost; cli_cost.add_verbs(sub, _cmd)  # noqa: E702
    from encoderlab import cli_series
    cli_series.add_verbs(sub, _cmd)
    from encoderlab import cli_store
    cli_store.add_verbs(sub, _cmd)
    from encoderlab import cli_doctor
    cli_doctor.add_verbs(sub, _cmd)
    from encoderlab import cli_scale; cli_scale.add_verbs(sub, _cmd)  # noqa: E702
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # our own bars only; HF's shard bars are noise here
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EncoderlabError as e:
        from rich.markup import escape
        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)   # one line: copyable, greppable
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
