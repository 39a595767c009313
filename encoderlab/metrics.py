"""Task metrics (numpy; scipy for rank correlation): classification from integer labels and
predictions, multi-label from 0/1 matrices, regression from values, ranking from gold ranks."""

from __future__ import annotations

import numpy as np


# which metric picks the best checkpoint by default, per task family, and which metrics fall
DEFAULT_METRIC = {"classification": "accuracy", "multilabel": "micro_f1", "regression": "spearman"}
LOWER_IS_BETTER = frozenset({"loss", "hamming_loss", "rmse", "mae"})


def task_family(task: str) -> str:
    """classification | multilabel | regression, from a data.task (or run.json task) value."""
    return task if task in ("multilabel", "regression") else "classification"


def resolve_metric(metric: str, task: str) -> str:
    """train.metric with "auto" replaced by the task's default."""
    return DEFAULT_METRIC[task_family(task)] if metric == "auto" else metric


def confusion(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts, rows = true class, columns = predicted class."""
    return np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)


def classification(labels: np.ndarray, preds: np.ndarray, names: list[str]) -> dict:
    """accuracy, macro-F1 (over classes present in labels or preds) and per-class P/R/F1/support."""
    k = len(names)
    cm = confusion(labels, preds, k)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support + predicted) > 0
    return {
        "accuracy": float(tp.sum() / max(len(labels), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {n: {"precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "support": int(support[i])}
                      for i, n in enumerate(names)},
        "predicted_share": {n: float(predicted[i] / max(len(preds), 1)) for i, n in enumerate(names)},
    }


def gold_ranks(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of the gold candidate in each row of (N, K) scores (ties count against the
    gold); 0 where the gold is not among the candidates (label -1)."""
    logits = np.where(mask, logits, -np.inf) if mask is not None else logits
    gold = np.take_along_axis(logits, np.maximum(labels, 0)[:, None], 1)
    ranks = (logits >= gold).sum(1)
    return np.where(labels >= 0, ranks, 0).astype(np.int64)


def ranking(ranks: np.ndarray, domains: list[str], ks: tuple[int, ...] = (1, 8, 64)) -> dict:
    """accuracy (= recall@1), recall@k, MRR overall, per domain, and the mean over domains.

    `ranks` are 1-based gold ranks, 0 = gold not retrieved (counts as a miss everywhere)."""
    def scores(r: np.ndarray) -> dict:
        hit = r > 0
        out = {"accuracy": float(np.mean(hit & (r == 1))) if len(r) else 0.0,
               "mrr": float(np.mean(np.where(hit, 1.0 / np.maximum(r, 1), 0.0))) if len(r) else 0.0}
        out.update({f"recall@{k}": float(np.mean(hit & (r <= k))) if len(r) else 0.0 for k in ks})
        return out
    doms = np.asarray(domains)
    per = {d: {**scores(ranks[doms == d]), "n": int((doms == d).sum())} for d in sorted(set(domains))}
    macro = {m: float(np.mean([p[m] for p in per.values()])) for m in scores(ranks[:1])} if per else {}
    return {**scores(ranks), "n": len(ranks), "per_domain": per, "domain_mean": macro}


def f1_counts(tp, fp, fn):
    """Elementwise F1 from counts (0 where there is nothing to score)."""
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    den = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 2 * tp / den, 0.0)


def binaryf1_counts(y: np.ndarray, pred: np.ndarray) -> float:
    return float(f1_counts((y & pred).sum(), (~y & pred).sum(), (y & ~pred).sum()))


def multilabel(labels: np.ndarray, pred: np.ndarray, names: list[str]) -> dict:
    """(N, L) 0/1 labels and boolean predictions -> micro / macro / samples F1, subset accuracy,
    Hamming loss, per-label P/R/F1/support, label shares and cardinality (predicted vs true).

    Macro-F1 averages the labels present in labels or predictions; samples-F1 counts a row with
    an empty gold and an empty predicted set as 1."""
    y = np.asarray(labels) > 0.5
    p = np.asarray(pred, dtype=bool)
    n = max(len(y), 1)
    tp, fp, fn = (y & p).sum(0), (~y & p).sum(0), (y & ~p).sum(0)
    f1 = f1_counts(tp, fp, fn)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
    present = (tp + fp + fn) > 0
    row_tp, row_fp, row_fn = (y & p).sum(1), (~y & p).sum(1), (y & ~p).sum(1)
    row_f1 = np.where(row_tp + row_fp + row_fn > 0, f1_counts(row_tp, row_fp, row_fn), 1.0)
    return {
        "micro_f1": float(f1_counts(tp.sum(), fp.sum(), fn.sum())),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "samples_f1": float(row_f1.mean()) if len(y) else 0.0,
        "subset_accuracy": float((y == p).all(1).mean()) if len(y) else 0.0,
        "hamming_loss": float((y != p).mean()) if y.size else 0.0,
        "per_label": {nm: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                           "support": int(y[:, j].sum()), "predicted": int(p[:, j].sum())}
                      for j, nm in enumerate(names)},
        "label_share_predicted": {nm: float(p[:, j].sum() / n) for j, nm in enumerate(names)},
        "label_share_true": {nm: float(y[:, j].sum() / n) for j, nm in enumerate(names)},
        "cardinality_predicted": float(p.sum() / n),
        "cardinality_true": float(y.sum() / n),
        "empty_predicted": float((p.sum(1) == 0).mean()) if len(y) else 0.0,
    }


def regression(targets: np.ndarray, preds: np.ndarray) -> dict:
    """RMSE, MAE, Pearson and Spearman correlation (scipy; NaN when either side is constant), and
    the mean / std of predictions and targets."""
    from scipy import stats
    y = np.asarray(targets, dtype=np.float64)
    p = np.asarray(preds, dtype=np.float64)
    constant = len(y) < 2 or np.ptp(y) == 0 or np.ptp(p) == 0
    return {
        "rmse": float(np.sqrt(np.mean((p - y) ** 2))) if len(y) else float("nan"),
        "mae": float(np.mean(np.abs(p - y))) if len(y) else float("nan"),
        "pearson": float("nan") if constant else float(stats.pearsonr(y, p)[0]),
        "spearman": float("nan") if constant else float(stats.spearmanr(y, p)[0]),
        "prediction_mean": float(p.mean()) if len(p) else float("nan"),
        "prediction_std": float(p.std()) if len(p) else float("nan"),
        "target_mean": float(y.mean()) if len(y) else float("nan"),
        "target_std": float(y.std()) if len(y) else float("nan"),
    }
