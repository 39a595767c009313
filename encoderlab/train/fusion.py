"""Second stage that cannot lose to the first: score fusion and weight-space ensembling.

* Score fusion (`ranking.rerank_alpha`): each context's candidates carry a first-stage (retriever)
  score and a reranker score. Both are standardised over the context's candidates (z-scores: the
  two live on unrelated scales) and mixed, alpha * reranker + (1 - alpha) * retriever. alpha = 0 is
  the retriever alone and is on the validation grid, so a tuned alpha never scores below the first
  stage on validation; alpha = 1 is the reranker alone.
* WiSE-FT (`ranking.wise`, Wortsman et al. 2022): the encoder's weights become
  (1 - w) * start + w * fine-tuned, w chosen on validation. Fine-tuning on a few domains trades away
  what the pretrained encoder knew about others; interpolating in weight space keeps much of both.
"""

from __future__ import annotations

import numpy as np
import torch

from encoderlab import metrics as M

ALPHAS = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))     # fusion grid, 0.05 apart


def zscore(scores: np.ndarray) -> np.ndarray:
    """Scores of one context's candidates, centred and scaled (a constant list becomes zeros)."""
    s = np.asarray(scores, dtype=np.float64)
    sd = s.std()
    return (s - s.mean()) / sd if sd > 1e-12 else np.zeros_like(s)


def fuse(rerank: list[np.ndarray], first: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    """Per context: alpha * z(reranker) + (1 - alpha) * z(retriever)."""
    if alpha >= 1.0:
        return rerank
    return [alpha * zscore(r) + (1 - alpha) * zscore(f) for r, f in zip(rerank, first)]


def gold_ranks(scores: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """1-based rank of the gold in each context's score list (ties count against the gold); 0 where
    the gold is absent (label -1) or the list is empty."""
    out = np.zeros(len(scores), dtype=np.int64)
    for i, (s, g) in enumerate(zip(scores, labels)):
        if g >= 0 and len(s):
            out[i] = int((s >= s[g]).sum())
    return out


def tune_alpha(rerank: list[np.ndarray], first: list[np.ndarray], labels: np.ndarray,
               domains: list[str], grid=ALPHAS) -> tuple[float, list[dict]]:
    """The alpha of `grid` with the best validation accuracy (then MRR; ties go to the larger
    alpha, i.e. the trained reranker), and the whole curve for the run record."""
    curve = []
    for a in grid:
        m = M.ranking(gold_ranks(fuse(rerank, first, a), labels), domains, (1,))
        curve.append({"alpha": float(a), "accuracy": m["accuracy"], "mrr": m["mrr"]})
    best = max(curve, key=lambda c: (round(c["accuracy"], 9), round(c["mrr"], 9), c["alpha"]))
    return best["alpha"], curve


def wise_grid(wise: float) -> list[float]:
    """The WiSE-FT weights `ranking.wise` asks to try: none for 1 (the fine-tuned weights alone), the
    configured one, or 0, 0.1, .., 1 when tuned on validation (-1)."""
    if wise == 1.0:
        return []
    return [wise] if wise >= 0 else [round(w, 1) for w in np.linspace(0, 1, 11)]


def wise_search(module: torch.nn.Module, start: dict, tuned: dict, grid: list[float], evaluate):
    """For each weight w of `grid` load (1 - w) * start + w * tuned and call evaluate(w) -> (record
    with "accuracy" and "mrr", payload). The module is left at the best w (validation accuracy, then
    MRR; ties go to the larger w, the fine-tuned side). Returns (best w, its payload, the curve:
    [{"wise": w, **record}])."""
    tried = []
    for w in grid:
        interpolate(module, start, tuned, w)
        tried.append((w, *evaluate(w)))
    w, _, payload = max(tried, key=lambda t: (t[1]["accuracy"], t[1]["mrr"], t[0]))
    interpolate(module, start, tuned, w)
    return w, payload, [{"wise": t[0], **t[1]} for t in tried]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the floating-point weights (the WiSE-FT starting point)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items() if v.is_floating_point()}


@torch.no_grad()
def interpolate(module: torch.nn.Module, start: dict, tuned: dict, w: float) -> None:
    """Load (1 - w) * start + w * tuned into `module` in place (weights absent from `start`, e.g.
    new marker embeddings of a different shape, keep their tuned values)."""
    state = module.state_dict()
    for k, t in tuned.items():
        s = start.get(k)
        mixed = t if s is None or s.shape != t.shape else torch.lerp(s, t, w)
        state[k].copy_(mixed.to(state[k].device, state[k].dtype))
