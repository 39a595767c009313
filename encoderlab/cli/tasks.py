"""`show` of multilabel and regression runs (the kind table names it here): data, the history and
final scores (`common.print_task_summary`, shared with the after-run summary), diagnostics and
per-label scores."""

from __future__ import annotations

from encoderlab.cli.common import console, length_line, print_findings, print_rows, print_task_summary, show_header


def show(run, args) -> None:
    """`show` of a multilabel or regression run: data, history, final scores, diagnostics."""
    if args.format == "json":
        print_task_summary(run, "json")
        return
    show_header(run, args)
    data = run.info.get("data")
    if data and "mean_tokens" in data:     # a distilled run's summary holds sizes and baselines only
        console.rule("data")
        sizes = data["sizes"]
        what = "labels" if data["task"] == "multilabel" else "target"
        console.print(f"task {data['task']}, {data['num_labels']} {what}; "
                      f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}; mean "
                      f"{data['mean_tokens']:.1f} tokens; {data['train_padding_waste']:.1%} padding in train "
                      f"batches; {data['parameters']:,} parameters", markup=False)
        if length_line(data):
            console.print(length_line(data), markup=False)
    console.rule("history")
    print_task_summary(run, args.format)
    from encoderlab.analysis import diagnose
    console.rule("diagnostics")
    print_findings(diagnose.load_or_compute(run), show_info=True)
    if getattr(args, "per_class", False) and run.info.get("task") == "multilabel":
        from encoderlab.analysis.tables import final_scores
        test = final_scores(run).get("test")
        if test and test.get("per_label"):
            rows = [{"label": k, **v} for k, v in test["per_label"].items()]
            print_rows(rows, [("label", "label"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                              ("support", "support"), ("predicted", "predicted")], args.format,
                       title="test, per label")
