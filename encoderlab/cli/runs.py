"""The verbs over stored runs: `runs` (list), `show` (one run, by its kind's view), `predict` (label a
file with a run or an ensemble) and `eval` (re-score stored checkpoints)."""

from __future__ import annotations

from encoderlab.cli.common import (add_verb, console, err, format_flag, open_store, print_rows, print_run_summary,
                                   print_task_summary, show_trained)


def cmd_runs(args):
    rows = open_store(args).list(name=args.name, status=args.status, group=args.group, limit=args.limit)
    cols = [("id", "id"), ("name", "name"), ("status", "status"), ("model", "model"), ("init", "init"),
            ("epochs_done", "epochs"), ("best_value", "best val"), ("test_accuracy", "test acc"),
            ("created", "created")]
    print_rows(rows, cols, args.format)


def cmd_show(args):
    from encoderlab import kinds
    run = open_store(args).get(args.run)
    kinds.view(run)(run, args)


def show_classification(run, args):
    """`show` of a classification (or derived) run: data, per-epoch history, diagnostics."""
    show_trained(run, args, print_run_summary, per_label="per_class")


def show_task(run, args) -> None:
    """`show` of a multilabel or regression run: data, history and final scores
    (`common.print_task_summary`, shared with the after-run summary), diagnostics, per-label scores."""
    multilabel = run.info.get("task") == "multilabel"
    show_trained(run, args, print_task_summary, per_label="per_label" if multilabel else "",
                 extra=(("predicted", "predicted"),))


def predict_runs(args, store, refs: list[str]) -> list:
    """The runs `predict` labels with: those named, or every completed run of --group."""
    from encoderlab.errors import ConfigError
    if args.group:
        from encoderlab.analysis.select import select
        runs = select(store, group=args.group, ids=refs or None)
        if not runs:
            raise ConfigError(f"no completed runs in group '{args.group}' (see `encoderlab runs --group ...`)")
        return runs
    if refs:
        return list({r.id: r for r in (store.get(ref) for ref in refs)}.values())
    raise ConfigError("name the run(s) before the input file, or --group G: "
                      "encoderlab predict RUN [RUN ...] input.csv")


def cmd_predict(args):
    from encoderlab import predict as P
    *refs, input_path = args.targets
    runs = predict_runs(args, open_store(args), refs)
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


def cmd_eval(args):
    from encoderlab.evaluate import eval_checkpoints
    run = open_store(args).get(args.run)
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


# -- parser --------------------------------------------------------------------------------------

def add_eval(sub) -> None:
    p = add_verb(sub, "eval", cmd_eval, "re-evaluate stored checkpoints of a run on a split; results join the store",
                 "encoderlab eval last --checkpoints all --split test")
    p.add_argument("run")
    p.add_argument("--checkpoints", default="all", help="all | best | last | step numbers, e.g. 100,200")
    p.add_argument("--split", default="validation", choices=["validation", "test"])
    p.add_argument("--force", action="store_true", help="re-evaluate checkpoints already evaluated on this split")
    format_flag(p)


def add_runs_show_predict(sub) -> None:
    p = add_verb(sub, "runs", cmd_runs, "list stored runs", "encoderlab runs --name 'quick*' --status completed")
    p.add_argument("--name", help="name pattern (* wildcard)")
    p.add_argument("--status", choices=["running", "completed", "interrupted", "failed", "pruned"])
    p.add_argument("--group", help="group pattern (* wildcard)")
    p.add_argument("--limit", type=int, default=0, help="only the newest N")
    format_flag(p)

    p = add_verb(sub, "show", cmd_show, "show a run: resolved config, per-epoch table, test metrics",
                 "encoderlab show last --per-class")
    p.add_argument("run")
    p.add_argument("--per-class", action="store_true", help="also per-class precision/recall on test")
    p.add_argument("--config", action="store_true", help="print the whole resolved config")
    format_flag(p)

    p = add_verb(sub, "predict", cmd_predict, "label a csv/tsv/jsonl/parquet file with a run's model, or "
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
    from encoderlab.config import RUNTIMES
    p.add_argument("--runtime", choices=list(RUNTIMES),
                   help="serve with this runtime (default: the run's own; onnx* need `encoderlab export`)")
