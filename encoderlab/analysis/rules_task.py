"""Per-run rules of the multilabel and regression tasks, read from their final events (the kept
checkpoint on validation, at the tuned thresholds, and on test) and the data summary:

* multilabel: collapse to the empty set, labels that are always on, labels never predicted;
* regression: (nearly) constant predictions, validation / test targets outside the train range.

The loss-curve rules (no learning, divergence, overfitting, padding ...) of `rules_run` apply to
these runs too; `diagnose` runs both."""

from __future__ import annotations

from encoderlab.analysis.findings import Finding, fmt, pct
from encoderlab.analysis.run_evidence import RunContext
from encoderlab.analysis.thresholds import (ALWAYS_ON_SHARE, ALWAYS_ON_TRUE_MAX, CONSTANT_PRED_RATIO,
                                            EMPTY_SET_SHARE, NEVER_PREDICTED_WARN, OUTSIDE_RANGE_WARN)


def _scored(ctx: RunContext) -> list[tuple[str, dict]]:
    """(split name, detail) of the final events, else the last validation event."""
    out = [(s.replace("final_", ""), ctx.final[s]["detail"]) for s in ("final_validation", "test") if s in ctx.final]
    if not out and ctx.val:
        out = [("validation (last evaluation)", ctx.val[-1]["detail"])]
    return out


def _names(xs: list[str], n: int = 6) -> str:
    return ", ".join(xs[:n]) + (f" and {len(xs) - n} more" if len(xs) > n else "")


def multilabel_findings(ctx: RunContext) -> list[Finding]:
    found = []
    scored = _scored(ctx)
    empty = [(s, d) for s, d in scored if (d.get("empty_predicted") or 0) >= EMPTY_SET_SHARE
             and (d.get("cardinality_true") or 0) > 0]
    if empty:
        found.append(Finding(
            "empty_set_collapse", "error", "the model predicts no label for almost every example",
            "; ".join(f"{s}: empty label set for {pct(d['empty_predicted'])} of examples (threshold "
                      f"{pct(EMPTY_SET_SHARE)}), {fmt(d['cardinality_predicted'], 2)} labels predicted per example "
                      f"vs {fmt(d['cardinality_true'], 2)} true" for s, d in empty),
            "binary cross-entropy on rare labels rewards all-negative outputs: set train.class_weights="
            "\"balanced\" (pos_weight), train longer or with a higher train.lr; the thresholds are tuned on "
            "validation, so this means the probabilities carry no signal"))
    vals = [v["detail"] for v in ctx.val if v.get("detail")]
    if not empty and vals and all((d.get("empty_predicted") or 0) >= EMPTY_SET_SHARE for d in vals):
        found.append(Finding(
            "empty_set_collapse", "warning", "at the 0.5 threshold the model predicted no label at every evaluation",
            f"{len(vals)} validation evaluation{'s' if len(vals) > 1 else ''}: empty label set for "
            + ", ".join(pct(d["empty_predicted"]) for d in vals) + " of examples (threshold "
            f"{pct(EMPTY_SET_SHARE)}); micro-F1 at 0.5 " + ", ".join(fmt(v["metrics_micro_f1"]) for v in ctx.val
                                                                    if v.get("metrics_micro_f1") is not None)
            + "; the kept checkpoint was chosen on these numbers, the tuned thresholds came after",
            "the probabilities stay below 0.5 for rare labels: set train.class_weights=\"balanced\" (pos_weight) "
            "so checkpoint selection sees predictions, or train longer / with a higher train.lr"))
    for s, d in scored[-1:]:
        pred, true = d.get("label_share_predicted") or {}, d.get("label_share_true") or {}
        on = [n for n, v in pred.items() if v >= ALWAYS_ON_SHARE and true.get(n, 0) < ALWAYS_ON_TRUE_MAX]
        if on:
            found.append(Finding(
                "always_on_labels", "error" if len(on) >= max(2, len(pred) // 4) else "warning",
                f"{len(on)} label{'s' if len(on) > 1 else ''} predicted for (almost) every example",
                f"{s}: " + _names([f"{n} ({pct(pred[n])} predicted, {pct(true.get(n, 0))} true)" for n in on]) + "; "
                f"{fmt(d.get('cardinality_predicted'), 2)} labels predicted per example vs "
                f"{fmt(d.get('cardinality_true'), 2)} true",
                "the probabilities of these labels do not separate the examples (tuning then lowers their "
                "thresholds below every probability): train longer or with another train.lr; check that the "
                "label column is read as intended (data.label_sep)"))
        per = d.get("per_label") or {}
        never = [n for n, v in per.items() if v.get("support", 0) > 0 and v.get("predicted", 0) == 0]
        present = [n for n, v in per.items() if v.get("support", 0) > 0]
        if never:
            share = len(never) / max(len(present), 1)
            found.append(Finding(
                "labels_never_predicted", "warning" if share >= NEVER_PREDICTED_WARN else "info",
                f"{len(never)} of {len(present)} labels present in {s} are never predicted",
                f"{s}: " + _names([n + " (" + str(per[n]["support"]) + " examples)" for n in never]),
                "rare labels need more examples or train.class_weights=\"balanced\" (pos_weight); their recall "
                "is 0, which pulls macro-F1 down"))
    return found


def regression_findings(ctx: RunContext) -> list[Finding]:
    found = []
    const = [(s, d) for s, d in _scored(ctx)
             if d.get("target_std") and d.get("prediction_std") is not None
             and d["prediction_std"] < CONSTANT_PRED_RATIO * d["target_std"]]
    if const:
        found.append(Finding(
            "constant_predictions", "error", "the model predicts (nearly) the same value for every example",
            "; ".join(f"{s}: prediction std {fmt(d['prediction_std'])} vs target std {fmt(d['target_std'])} "
                      f"(below {pct(CONSTANT_PRED_RATIO)} of it), mean prediction {fmt(d['prediction_mean'])} vs "
                      f"target mean {fmt(d['target_mean'])}" for s, d in const),
            "the model learned the mean only: train longer or with a higher train.lr; keep "
            "train.standardize_targets = true (small targets give tiny gradients otherwise); Pearson / Spearman "
            "of constant predictions are undefined"))
    tr = ctx.data.get("train_target") or {}
    outside = ctx.data.get("outside_train_range") or {}
    far = {s: v for s, v in outside.items() if v > 0}
    if tr and far:
        worst = max(far.values())
        found.append(Finding(
            "targets_outside_train_range", "warning" if worst > OUTSIDE_RANGE_WARN else "info",
            "some validation / test targets lie outside the range seen in training",
            f"train targets {fmt(tr['min'])} .. {fmt(tr['max'])}; outside it: "
            + ", ".join(f"{s} {pct(v)}" for s, v in far.items())
            + "; " + ", ".join(f"{s} range {fmt(a)} .. {fmt(b)}"
                               for s, (a, b) in (ctx.data.get("target_range") or {}).items()),
            "a regression head extrapolates poorly: errors on these examples are large; train on data covering "
            "the whole range (or expect and report it)"))
    return found


def task_findings(ctx: RunContext) -> list[Finding]:
    task = ctx.data.get("task") or ctx.info.get("task")
    if task == "multilabel":
        return multilabel_findings(ctx)
    if task == "regression":
        return regression_findings(ctx)
    return []
