"""`show` and the after-run summary of multilabel and regression runs (the kind table names
`show` here): per-evaluation history with the task's metrics, the final scores against the task's
baseline, the tuned thresholds or the target scale, per-label scores."""

from __future__ import annotations

import json

from encoderlab import tasks as T
from encoderlab.cli import console, print_findings, print_rows, show_header


def _history(run) -> list[dict]:
    """One row per evaluation: train loss (and running score) since the previous one, the task's
    validation metrics."""
    rows: dict[int, dict] = {}
    for ev in run.events():
        split, m = ev["split"], ev.get("metrics", {})
        if split not in ("train", "validation"):
            continue
        row = rows.setdefault(ev["step"], {"epoch": ev["epoch"], "step": ev["step"]})
        if split == "train":
            row.update(train_loss=m.get("loss"), seconds=m.get("seconds"))
        else:
            row.update(epoch=ev["epoch"], **{f"val_{k}": v for k, v in m.items()})
    return sorted(rows.values(), key=lambda r: r["step"])


def _final(run) -> dict[str, dict]:
    out = {}
    for ev in run.events():
        if ev["split"] in ("test", "final_validation"):
            out[ev["split"]] = {**ev.get("metrics", {}), **ev.get("detail", {})}
    return out


def print_task_summary(run, fmt: str = "table") -> None:
    info = run.info
    kind = T.family(info.get("task", ""))
    rows, final = _history(run), _final(run)
    if fmt == "json":
        print(json.dumps({"run": {**info, "status": run.status}, "epochs": rows, "final": final}, indent=2,
                         default=str))
        return
    keys = [k for k in T.EVENT_METRICS[kind]]
    cols = [("epoch", "epoch"), ("step", "step"), ("train_loss", "train loss")] + \
        [(f"val_{k}", f"val {T.SHORT.get(k, k)}") for k in keys]
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
        console.print(f"task {data['task']}, {data['num_labels']} {'labels' if data['task'] == 'multilabel' else 'target'}; "
                      f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}; mean "
                      f"{data['mean_tokens']:.1f} tokens; {data['train_padding_waste']:.1%} padding in train "
                      f"batches; {data['parameters']:,} parameters", markup=False)
    console.rule("history")
    print_task_summary(run, args.format)
    from encoderlab.analysis import diagnose
    console.rule("diagnostics")
    print_findings(diagnose.load_or_compute(run), show_info=True)
    if getattr(args, "per_class", False) and run.info.get("task") == "multilabel":
        test = _final(run).get("test")
        if test and test.get("per_label"):
            rows = [{"label": k, **v} for k, v in test["per_label"].items()]
            print_rows(rows, [("label", "label"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                              ("support", "support"), ("predicted", "predicted")], args.format,
                       title="test, per label")
