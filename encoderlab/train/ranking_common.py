"""What the ranking recipes (bi-encoder, cross-encoder, baselines) share: tokenized contexts and
candidates under the segment budgets, the flat metrics of a ranking evaluation, the optimizer step
and the running train metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from encoderlab import config as C
from encoderlab.data.ranking import RankData, RankSplit
from encoderlab.encode.budget import Segments, budget_stats, encode_candidates, encode_contexts

SPLITS = ("train", "validation", "test")


@dataclass
class SplitTokens:
    """One split under the budgets: context segments, the unique candidate texts' segments, and
    per example the indices of its candidates into them (explicit-list mode)."""
    ctx: Segments
    cand: Segments | None
    cand_index: list[list[int]] | None


def tokenize_split(tokenizer, split: RankSplit, rc: C.RankingConfig, markers: bool, reserve: int) -> SplitTokens:
    ctx = encode_contexts(tokenizer, split.left, split.mention, split.right, rc.context_tokens,
                          rc.context_truncation, markers)
    if split.candidates is None:
        return SplitTokens(ctx, None, None)
    unique: dict[str, int] = {}
    index = [[unique.setdefault(t, len(unique)) for t in cands] for cands in split.candidates]
    cand = encode_candidates(tokenizer, list(unique), rc.candidate_tokens, rc.candidate_truncation, reserve)
    return SplitTokens(ctx, cand, index)


def dictionary_tokens(tokenizer, data: RankData, rc: C.RankingConfig, reserve: int) -> tuple[Segments, np.ndarray]:
    """Segments of the dictionary entries of every domain the splits use, and their rows."""
    doms = {d for s in SPLITS for d in getattr(data, s).domains}
    rows = np.flatnonzero(np.isin(np.asarray(data.dictionary.domains), sorted(doms)))
    segs = encode_candidates(tokenizer, [data.dictionary.text(r) for r in rows], rc.candidate_tokens,
                             rc.candidate_truncation, reserve)
    return segs, rows


def flat_metrics(scores: dict, extra: dict | None = None) -> dict:
    """Overall metrics, `<metric>/<domain>` and `domain_mean/<metric>` as one flat dict."""
    keys = [k for k in scores if k not in ("n", "per_domain", "domain_mean")]
    out = {k: scores[k] for k in keys}
    for d, s in scores["per_domain"].items():
        out.update({f"{k}/{d}": s[k] for k in keys})
    out.update({f"domain_mean/{k}": v for k, v in scores["domain_mean"].items()})
    return {**out, **(extra or {})}


@dataclass
class Running:
    """Running training loss and top-1 accuracy over the contexts of one epoch."""
    loss: float = 0.0
    correct: int = 0
    seen: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def add(self, out: dict, labels: torch.Tensor) -> float:
        self.loss += out["loss"].item() * len(labels)
        self.correct += int((out["logits"].argmax(1).cpu() == labels).sum())
        self.seen += len(labels)
        return self.loss / self.seen

    def metrics(self, sched) -> dict:
        return {"loss": self.loss / max(self.seen, 1), "accuracy": self.correct / max(self.seen, 1),
                "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - self.t0}


def ks(rc: C.RankingConfig) -> tuple[int, ...]:
    return tuple(sorted({1, 8, 64, rc.top_k}))


def stats_for(tokens: SplitTokens, pairs: list[list[tuple[int, int]]], rc: C.RankingConfig) -> dict:
    return budget_stats(tokens.ctx, tokens.cand, pairs, rc.context_tokens, rc.candidate_tokens)
