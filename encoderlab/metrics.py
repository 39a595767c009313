"""Classification metrics from integer labels and predictions (numpy, no sklearn needed)."""

from __future__ import annotations

import numpy as np


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
