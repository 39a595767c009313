"""CLI verbs that read the run store and compare runs: `compare`, `diagnose`, `report`."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape

from encoderlab.cli.common import (add_verb, console, emit, format_flag, open_store, print_findings, print_rows,
                                   select_runs, selection_flags)


def cmd_compare(args):
    from encoderlab.analysis import compare as CMP
    from encoderlab.analysis.paired import paired
    from encoderlab.analysis.select import split_by
    runs = select_runs(args)
    if not args.metric:     # the runs' own checkpoint metric: accuracy, micro_f1 (multilabel), spearman (regression)
        from encoderlab.tasks import metric_for_runs
        args.metric = metric_for_runs(runs)
    if args.paired:
        key, a, b = args.paired
        side_a, side_b = split_by(runs, key, [a, b])
        result = paired(side_a, side_b, metric=args.metric, split=args.split)
        if args.format == "json":
            print(json.dumps(result.to_dict(), indent=2, default=str))
            return
        for t in (result.summary_table(), result.tests_table(), result.pairs_table()):
            emit(t, args.format)
        if result.unmatched:
            emit(result.unmatched_table(), args.format)
        for w in result.warnings:
            console.print(f"[yellow]note:[/] {escape(w)}")
        return
    if args.epochs:
        table = CMP.epochs_side_by_side(runs)
    elif args.checkpoints:
        for run in runs:
            emit(CMP.checkpoint_table(run), args.format)
        return
    elif args.by_dataset:
        from encoderlab.analysis import multi
        emit(CMP.dataset_table(runs, metric=args.metric, split=args.split), args.format)
        res = multi.across_datasets(runs, args.metric, args.split)
        if res is not None:
            emit(multi.friedman_table(res), args.format)
        return
    else:
        from encoderlab.analysis import multi, select as SEL
        emit(CMP.config_table(runs, metric=args.metric), args.format)
        pruned = [] if args.status else SEL.select(open_store(args), group=args.group, ids=args.runs or None,
                                                   name=args.name, status="pruned")
        for table in multi.extra_tables(runs, pruned, args.metric, args.split, args.detect):
            emit(table, args.format)
        return
    emit(table, args.format)


def cmd_diagnose(args):
    from encoderlab.analysis import diagnose
    runs = select_runs(args, status="any")
    if args.format == "json":
        out = {r.id: [f.to_dict() for f in diagnose.load_or_compute(r)] for r in runs}
        out["(group)"] = [f.to_dict() for f in diagnose.diagnose_group(runs)]
        print(json.dumps(out, indent=2))
        return
    if args.format != "table":
        from encoderlab.analysis.findings import FINDING_COLUMNS
        rows = [{"run": r.id, **f.to_dict()} for r in runs for f in diagnose.load_or_compute(r)
                if args.all or f.severity != "info"]
        if len(runs) > 1:
            rows += [{"run": "(group)", **f.to_dict()} for f in diagnose.diagnose_group(runs)
                     if args.all or f.severity != "info"]
        print_rows(rows, FINDING_COLUMNS, args.format, title="diagnostics")
        return
    for run in runs:
        console.rule(f"{run.id} ({run.status})")
        print_findings(diagnose.load_or_compute(run), show_info=args.all)
    if len(runs) > 1:
        console.rule("across runs")
        print_findings(diagnose.diagnose_group(runs), show_info=args.all)


def cmd_report(args):
    from encoderlab.analysis import report as REP
    runs = select_runs(args, status="any")
    out = Path(args.output)
    title = args.title or (f"encoderlab report: {args.group}" if args.group else "encoderlab report")
    if out.suffix.lower() in (".md", ".markdown"):
        REP.write_markdown(runs, out, title)
    else:
        REP.write_html(runs, out, title)
    console.print(f"wrote {out} ({len(runs)} runs)")



def add_verbs(sub) -> None:
    p = add_verb(sub, "compare", cmd_compare,
             "compare runs: mean ± std per configuration, datasets, epochs, checkpoints, paired tests",
             "encoderlab compare --group pre-vs-npre --paired model.init pretrained random")
    selection_flags(p)
    from encoderlab.tasks import EVENT_METRICS
    p.add_argument("--metric", choices=list(dict.fromkeys(m for ms in EVENT_METRICS.values() for m in ms)),
                   help="default: the runs' task metric (accuracy; micro_f1 multilabel; spearman regression)")
    p.add_argument("--split", default="test", help="split of the score compared (default test)")
    p.add_argument("--by-dataset", action="store_true", help="configurations x datasets with a mean column")
    p.add_argument("--epochs", action="store_true", help="per-epoch metrics of the runs side by side")
    p.add_argument("--checkpoints", action="store_true", help="metrics at each saved checkpoint, per run")
    p.add_argument("--paired", nargs=3, metavar=("KEY", "A", "B"),
                   help="paired comparison of KEY=A vs KEY=B over matched seeds/folds")
    p.add_argument("--detect", type=float, metavar="DIFF",
                   help="seeds needed to detect a difference DIFF (e.g. 0.01) from the observed seed spread")
    format_flag(p, help=None)

    p = add_verb(sub, "diagnose", cmd_diagnose, "name what went wrong in runs (collapse, no learning, LR too "
             "high, overfitting, padding waste, seed variance ...) with evidence and a fix",
             "encoderlab diagnose --group pre-vs-npre")
    selection_flags(p)
    p.add_argument("--all", action="store_true", help="also informational findings")
    format_flag(p, help="table/json: findings per run; markdown/csv: one table of all findings")

    p = add_verb(sub, "report", cmd_report, "write a self-contained HTML (or Markdown) report of runs",
             "encoderlab report --group pre-vs-npre -o report.html")
    selection_flags(p)
    p.add_argument("-o", "--output", required=True, help="report.html, or report.md for Markdown + PNGs")
    p.add_argument("--title", help="report title")
