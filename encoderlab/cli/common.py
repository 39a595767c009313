"""What every verb of the command line shares: the consoles, the store from `--store`, the way a verb
is declared (help with an example), output formats, run selection, errors, what is printed after a
run, and the one "interrupted" line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from encoderlab import config as C
from encoderlab.analysis import render as R

# pipes and CI logs get a wide fixed width instead of rich's 80-column fallback
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

QUICKSTART = Path(__file__).parent.parent / "presets" / "quickstart.toml"


def open_store(args):
    """The run store named by `--store` (default ./runs or $ENCODERLAB_STORE)."""
    from encoderlab.store.runs import RunStore
    return RunStore(args.store)


# -- declaring verbs -----------------------------------------------------------------------------

def add_verb(sub, name, func, help_, example, **kw) -> argparse.ArgumentParser:
    """A sub-command whose --help ends with an example."""
    p = sub.add_parser(name, help=help_, description=f"{help_}\n\nExample:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    p.set_defaults(func=func)
    return p


def experiment_flags(p, file_help: str) -> None:
    """FILE, dotted overrides, --quiet and --json: the flags of the verbs that train from a file."""
    p.add_argument("file", help=file_help)
    p.add_argument("overrides", nargs="*", help="dotted overrides key=value (TOML values)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-eval lines")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def format_flag(p, help: str | None = "output format") -> None:
    p.add_argument("--format", choices=R.FORMATS, default="table", help=help)


def selection_flags(p) -> None:
    """Which stored runs a verb reads: ids, --group, --name, --status, --where KEY=VALUE."""
    p.add_argument("runs", nargs="*", help="run ids (or unique prefixes/suffixes); default: all matching")
    p.add_argument("--group", help="runs of this group (pattern, * wildcard), e.g. a sweep")
    p.add_argument("--name", help="runs whose name matches (pattern, * wildcard)")
    p.add_argument("--status", help="only runs with this status (default: completed; 'any' for all)")
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="only runs whose config has KEY=VALUE (repeatable), e.g. --where train.lr=1e-3")


def select_runs(args, status="completed") -> list:
    """The runs `selection_flags` name; a StoreError when none match."""
    from encoderlab.analysis import select as SEL
    from encoderlab.errors import StoreError
    runs = SEL.select(open_store(args), group=args.group, ids=args.runs or None, name=args.name,
                      status=args.status or status)
    for cond in getattr(args, "where", None) or []:
        key, value = C.parse_override(cond)
        runs = SEL.split_by(runs, key, [value])[0] if runs else runs
    if not runs:
        raise StoreError("no runs match; see `encoderlab runs` (only completed runs are compared "
                         "unless --status any)")
    return runs


# -- output --------------------------------------------------------------------------------------

def print_rows(rows: list[dict], columns: list[tuple], fmt: str = "table", title: str = "") -> None:
    """rows as a rich table, or Markdown / CSV / JSON for machines (see encoderlab.analysis.render)."""
    R.emit(R.Table(rows, columns, title=title), fmt, console)


def emit(table, fmt) -> None:
    """A Table: rich table for people, markdown/csv/json for machines; then its notes."""
    R.emit(table, fmt, console)
    if fmt in ("table", "markdown"):
        if getattr(table, "fixed", None):
            from encoderlab.analysis.configs import fixed_rows
            rows = fixed_rows(table.fixed)
            if rows:
                console.print("same in all: " + ", ".join(f"{r['key']}={r['value']}" for r in rows), markup=False)
        for w in getattr(table, "warnings", []):
            console.print(f"[yellow]note:[/] {escape(w)}")


def print_error(text: str) -> None:
    """An error as one line on stderr: copyable, greppable."""
    err.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)


def interrupted(store=None, run_id: str | None = None, *, then: str = "") -> NoReturn:
    """Ctrl-C (or SIGTERM) stopped a verb: one line on stderr saying how to go on, exit status 130.

    The way on is `encoderlab resume` of `run_id` (else of the store's newest run); verbs whose runs
    do not resume say what to do instead in `then`."""
    if not then:
        if run_id is None and store is not None:
            newest = store.list(limit=1)
            run_id = newest[-1]["id"] if newest else None
        then = f"continue with: encoderlab resume {run_id or 'RUN'}"
    err.print(f"[yellow]interrupted[/]; {then}")
    sys.exit(130)


# -- a run: what it used, its history, its findings ----------------------------------------------

TIME_PARTS = (("startup", "start-up"), ("setup", "setup"), ("train", "train"), ("eval", "validation"),
              ("test", "test"), ("checkpoint", "checkpoints"), ("finish", "save"))

EPOCH_COLUMNS = [("epoch", "epoch"), ("step", "step"), ("train_loss", "train loss"), ("train_acc", "train acc"),
                 ("val_loss", "val loss"), ("val_acc", "val acc"), ("val_f1", "val F1"), ("elapsed", "elapsed s")]


def time_breakdown(timing: dict) -> str:
    """'wall 93.2 s = start-up 3.1 + setup 9.0 + train 54.0 + ...' from run.json's timing."""
    parts = [(label, timing[k]) for k, label in TIME_PARTS if timing.get(k)]
    other = timing.get("wall", 0.0) - sum(v for _, v in parts)
    if other > 0.05:
        parts.append(("other", other))
    return f"wall {timing.get('wall', 0.0):.1f} s = " + " + ".join(f"{label} {v:.1f}" for label, v in parts)


def say_machine(cfg: C.ExperimentConfig) -> None:
    """The precision and threads the run will use, and why (measured once per machine)."""
    from encoderlab import machine
    console.print(f"[dim]{escape(machine.describe(cfg.train.precision, cfg.train.threads, cfg.train.device))}[/]",
                  soft_wrap=True)


def say_machine_and_time(info: dict) -> None:
    if info.get("precision_reason"):
        console.print(f"ran at precision {escape(info['precision_reason'])}; {info.get('threads')} thread(s)",
                      soft_wrap=True)
    if info.get("timing"):
        console.print(f"time: {time_breakdown(info['timing'])}", soft_wrap=True)


def length_line(data: dict) -> str:
    """What encode.max_length cut, per split: 'long texts (encode.long = head): cut train 27.5%
    (18.7% of tokens dropped), ...'; under chunks the windows per document. Empty for runs stored
    before it was recorded."""
    if "cut_share" not in data:
        return ""
    splits = [k for k in ("train", "validation", "test") if k in data["cut_share"]]
    long = data.get("long", "head")
    if long == "chunks":
        w = data.get("windows", {})
        return ("long texts (encode.long = chunks): longer than one window " + ", ".join(
            f"{k} {data['cut_share'][k]:.1%}" for k in splits) + "; windows per document " + ", ".join(
            f"{k} mean {w[k]['mean']:.1f} max {w[k]['max']}" for k in splits if k in w) + "; no text dropped")
    return (f"long texts (encode.long = {long}): cut " + ", ".join(
        f"{k} {data['cut'][k]} of {data['sizes'][k]} ({data['cut_share'][k]:.1%}, {data['dropped_share'][k]:.1%} "
        f"of text tokens dropped)" for k in splits))


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


def print_data(data: dict) -> None:
    """The data summary of a fine-tuning run: sizes, lengths, padding, parameters, what max_length cut,
    vocabulary coverage."""
    sizes = data["sizes"]
    what = {"multilabel": "labels", "regression": "target"}.get(data["task"], "labels")
    console.print(f"task {data['task']}, {data['num_labels']} {what}; train {sizes['train']}, "
                  f"validation {sizes['validation']}, test {sizes['test']}; mean {data['mean_tokens']:.1f} "
                  f"tokens; {data['train_padding_waste']:.1%} padding in train batches; "
                  f"{data['parameters']:,} parameters", markup=False)
    for line in (length_line(data), vocabulary_line(data.get("vocabulary"))):
        if line:
            console.print(line, markup=False)


def vocabulary_line(vocab: dict | None) -> str:
    """[UNK] share and all-[UNK] examples per split, the most frequent unknown characters of train."""
    if not vocab:
        return ""
    cov = vocab["splits"]
    line = ("[UNK] share " + ", ".join(f"{k} {v['unk_share']:.1%}" for k, v in cov.items())
            + "; all-[UNK] examples " + ", ".join(f"{k} {v['all_unk_share']:.1%} ({v['all_unknown']})"
                                                  for k, v in cov.items()))
    chars = vocab.get("train_chars")
    if chars and chars["distinct"]:
        line += (f"; train: {chars['distinct']} unknown characters ({chars['occurrences']} occurrences; the "
                 f"{chars['to_cover']} most frequent cover {vocab['cover']:.0%}), most frequent: "
                 + " ".join(u for u, _ in chars["top"][:10]))
    added = vocab.get("added")
    if added:
        line += (f"; encode.add_tokens added {added['added']} {added['unit']} tokens "
                 f"({added['covered_share']:.1%} of the train [UNK] {added['unit']}s)")
    return line


def print_task_summary(run, fmt: str = "table") -> None:
    """A multilabel / regression run's history with the task's metrics, final scores beside the task's
    baseline, the tuned thresholds or the prediction spread."""
    from encoderlab import tasks as T
    from encoderlab.analysis.tables import epoch_table, final_scores
    info = run.info
    kind = T.family(info.get("task", ""))
    rows, final = epoch_table(run), final_scores(run)
    if fmt == "json":
        print(json.dumps({"run": {**info, "status": run.status}, "epochs": rows, "final": final}, indent=2,
                         default=str))
        return
    cols = [("epoch", "epoch"), ("step", "step"), ("train_loss", "train loss")] + \
        [(f"val_{k}", f"val {T.SHORT.get(k, k)}") for k in T.EVENT_METRICS[kind]]
    print_rows(rows, cols, fmt, title=f"run {run.id}")
    base = (info.get("data") or {}).get("baseline") or {}
    for split, name in (("final_validation", "validation"), ("test", "test")):
        if split not in final:
            continue
        console.print(f"{name}: {T.score_line(final[split])}", markup=False)
        b = base.get(name)
        if b:
            console.print(f"  baseline ({base.get('method')}): {T.score_line(b)}", markup=False)
    f = final.get("test") or {}
    if kind == "multilabel" and f:
        th = (final.get("final_validation") or {}).get("thresholds") or {}
        if th:
            console.print(f"thresholds tuned on validation: global {th['global_threshold']:.2f}, per label "
                          f"{min(th['thresholds'].values()):.2f} .. {max(th['thresholds'].values()):.2f}; validation "
                          f"micro-F1 {th['micro_f1_at_0.5']:.4f} at 0.5 -> {th['micro_f1_at_global']:.4f} global "
                          f"-> {th.get('micro_f1_tuned', th['micro_f1_at_global']):.4f} per label", markup=False)
        console.print(f"test labels per example: predicted {f.get('cardinality_predicted', 0):.2f}, true "
                      f"{f.get('cardinality_true', 0):.2f}; empty predictions {f.get('empty_predicted', 0):.1%}",
                      markup=False)
    if kind == "regression" and f:
        console.print(f"test predictions mean {f['prediction_mean']:.4f} std {f['prediction_std']:.4f}; targets "
                      f"mean {f['target_mean']:.4f} std {f['target_std']:.4f}", markup=False)
    if "test" in final:
        console.print(f"scores of the best checkpoint ({f.get('checkpoint', '-')}), chosen on validation "
                      f"{info.get('best_metric')}")


def print_run_summary(run, fmt: str = "table") -> None:
    """A classification run's per-epoch table, then its final scores beside the majority baseline."""
    from encoderlab.analysis.tables import epoch_table, final_scores
    info = run.info
    if info.get("task") in ("multilabel", "regression"):
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
            line += f"   majority-class baseline {base:.4f}" + (f" (always '{escape(str(top))}')" if top else "")
        console.print(line)
    if "test" in final:
        console.print(f"scores of the best checkpoint ({final['test'].get('checkpoint', '-')}), chosen on "
                      f"validation {info.get('best_metric')}")


def after_run(args, run) -> None:
    """After a classification (or distilled) run: diagnose it, print its summary and what to do next."""
    from encoderlab.analysis import diagnose
    findings = diagnose.write(run)
    print_run_summary(run, "json" if args.json else "table")
    if not args.json:
        print_findings(findings)
        console.print(f"stored in [bold]{run.dir}[/]")
        console.print(f"look again: encoderlab show {run.id}   |   label a file: "
                      f"encoderlab predict {run.id} input.csv -o preds.csv")


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


SCORE_COLUMNS = [("label", "label"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                 ("support", "support")]


def show_trained(run, args, summary, per_label: str = "", extra: tuple = ()) -> None:
    """`show` of a trained run of a supervised kind: header, data, history and final scores
    (`summary`, the printer the end of a run uses), diagnostics, and with --per-class the test scores
    of each label (`per_label`: the key of the test scores holding them, "" = none)."""
    if args.format == "json":
        summary(run, "json")
        return
    show_header(run, args)
    data = run.info.get("data")
    if data and "mean_tokens" in data:     # a distilled run's summary holds sizes and baselines only
        console.rule("data")
        print_data(data)
    console.rule("history")
    summary(run, args.format)
    from encoderlab.analysis import diagnose
    console.rule("diagnostics")
    print_findings(diagnose.load_or_compute(run), show_info=True)
    if per_label and getattr(args, "per_class", False):
        from encoderlab.analysis.tables import final_scores
        test = final_scores(run).get("test")
        if test and test.get(per_label):
            rows = [{"label": k, **v} for k, v in test[per_label].items()]
            print_rows(rows, SCORE_COLUMNS + list(extra), args.format,
                       title="test, per label" if per_label == "per_label" else "test, per class")


def keep_best_models(args, store, group: str, say: bool = True) -> None:
    """`[sweep] keep_models = K`: the finished group keeps the final weights of its best K
    configurations by validation only (the rest keep metrics, curves and predictions)."""
    from encoderlab import config as C
    from encoderlab.sweep import keep_models
    k = keep_models(C.load_raw(args.file).get("sweep"), str(args.file))
    if not k:
        return
    from encoderlab.analysis import keep
    decisions, metric = keep.plan(store, group, k)
    freed = keep.apply(store, decisions)
    dropped = sum(not d.keep for d in decisions)
    if say:
        console.print(f"[sweep] keep_models = {k}: kept the models of the best {k} configuration(s) by validation "
                      f"{metric}; removed the weights of {dropped} run(s), {freed / 1e6:,.1f} MB (metrics, curves "
                      f"and predictions stay)", markup=False)
