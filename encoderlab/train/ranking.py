"""What the ranking recipes share: tokenized contexts and candidates under the segment budgets,
the store events of a ranking evaluation, and the baselines (random, first-listed candidate).

`run(cfg, store)` dispatches on ranking.mode: cross -> train/crossencoder.py, bi and zero-shot ->
train/biencoder.py, random / first -> `baseline` here. Every mode writes a run whose events carry
accuracy, MRR and recall@k overall, per domain (`accuracy/<domain>`) and as the mean over domains
(`domain_mean/accuracy`), so `encoderlab rank-table` (the compare machinery) tabulates them."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from encoderlab import config as C
from encoderlab import metrics as M
from encoderlab.data.ranking import RankData, RankSplit, load_ranking
from encoderlab.encode.budget import Segments, budget_stats, encode_candidates, encode_contexts
from encoderlab.store.runs import Run, RunStore, now

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


@contextlib.contextmanager
def run_status(run: Run, state: dict):
    """Ctrl-C or `kill` marks the run interrupted, any other error failed; both re-raise.
    (Ranking runs restart rather than resume.)"""
    from encoderlab.train.fit import sigterm_as_interrupt
    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt:
        run.update(status="interrupted", message=f"stopped at step {state['step']} (ranking runs restart)")
        raise
    except BaseException as e:
        run.update(status="failed", message=f"{type(e).__name__}: {e}"[:500])
        raise


def optimizer_step(model, opt, sched, loss: torch.Tensor, max_grad_norm: float) -> None:
    """backward -> clip -> AdamW step -> schedule step -> clear gradients."""
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


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


def baseline(cfg: C.ExperimentConfig, store: RunStore, progress: bool = False) -> Run:
    """random: the gold's rank under a seeded random order; first: the first-listed candidate
    ranks first (WordNet lists senses by frequency). Needs explicit candidate lists."""
    data = load_ranking(cfg.data, cfg.ranking)
    if data.candidates != "list":
        from encoderlab.errors import ConfigError
        raise ConfigError(f"ranking.mode = '{cfg.ranking.mode}' ranks an explicit candidate list; this data "
                          "links against a dictionary (set ranking.candidates = \"list\" if rows have lists)")
    run = store.create(cfg, [], task="ranking", data={"sizes": {s: len(getattr(data, s)) for s in SPLITS}})
    rng = np.random.default_rng(cfg.train.seed)
    for split in ("validation", "test"):
        sp = getattr(data, split)
        ranks = []
        for cands, gold in zip(sp.candidates, sp.labels):
            order = rng.permutation(len(cands)) if cfg.ranking.mode == "random" else np.arange(len(cands))
            ranks.append(int(np.flatnonzero(order == gold)[0]) + 1)
        scores = M.ranking(np.asarray(ranks), sp.domains, ks(cfg.ranking))
        run.log({"split": "test" if split == "test" else "final_validation", "step": 0, "epoch": 0,
                 "metrics": flat_metrics(scores), "detail": {"per_domain": scores["per_domain"]}})
        if split == "validation":
            run.log({"split": "validation", "step": 0, "epoch": 0, "metrics": flat_metrics(scores)})
    run.update(status="completed", finished=now(), test_accuracy=scores["accuracy"])
    return run


def stats_for(tokens: SplitTokens, pairs: list[list[tuple[int, int]]], rc: C.RankingConfig) -> dict:
    return budget_stats(tokens.ctx, tokens.cand, pairs, rc.context_tokens, rc.candidate_tokens)


def run(cfg: C.ExperimentConfig, store: RunStore, progress: bool = True, callback=None) -> Run:
    """One ranking run of any mode (see the module docstring)."""
    mode = cfg.ranking.mode
    if mode in ("random", "first"):
        return baseline(cfg, store, progress)
    if mode == "cross":
        from encoderlab.train.crossencoder import fit_cross
        return fit_cross(cfg, store, progress=progress, callback=callback)
    from encoderlab.train.biencoder import fit_bi
    return fit_bi(cfg, store, progress=progress, callback=callback)


def budget_report(cfg: C.ExperimentConfig, budgets: list[tuple[int, int]], split: str = "train") -> list[dict]:
    """Without training: truncation rates and padding waste of `split`'s (context, candidate)
    pairs under each context/candidate budget, batched as the cross-encoder trains (train.batch_size
    contexts in seeded order, ranking.k_train candidates each, dynamic padding)."""
    from encoderlab.models.classifier import prepare
    from encoderlab.encode.budget import add_markers
    data = load_ranking(cfg.data, C.replace(cfg.ranking, candidates="list"))
    _, _, tok = prepare(cfg.model)
    if cfg.ranking.markers:
        add_markers(tok)
    sp = getattr(data, split)
    rng = np.random.default_rng(cfg.train.seed)
    order = rng.permutation(len(sp))
    k = cfg.ranking.k_train
    picks = [list(rng.permutation(len(sp.candidates[i]))[:k or None]) for i in order]
    rows = []
    for c_tok, k_tok in budgets:
        rc = C.replace(cfg.ranking, context_tokens=c_tok, candidate_tokens=k_tok)
        t = tokenize_split(tok, sp, rc, cfg.ranking.markers, reserve=1)
        pairs = [[(int(i), t.cand_index[i][j]) for i, pick in zip(order[b:b + cfg.train.batch_size],
                                                                  picks[b:b + cfg.train.batch_size]) for j in pick]
                 for b in range(0, len(order), cfg.train.batch_size)]
        rows.append({"budget": f"{c_tok}/{k_tok}", "context_tokens": c_tok, "candidate_tokens": k_tok,
                     "context_truncation": rc.context_truncation, "candidate_truncation": rc.candidate_truncation,
                     **stats_for(t, pairs, rc)})
    return rows
