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
