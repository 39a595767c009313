"""What the ranking recipes share: tokenized contexts and candidates under the segment budgets,
the store events of a ranking evaluation, and the baselines (random, first-listed candidate).

`run(cfg, store)` dispatches on ranking.mode: cross -> train/crossencoder.py, bi and zero-shot ->
train/biencoder.py, random / first -> `baseline` here. Every mode writes a run whose events carry
accuracy, MRR and recall@k overall, per domain (`accuracy/<domain>`) and as the mean over domains
(`domain_mean/accuracy`), so `encoderlab rank-table` (the compare machinery) tabulates them."""

from __future__ import annotations

import numpy as np

from encoderlab import config as C
from encoderlab import metrics as M
from encoderlab.data.ranking import load_ranking
from encoderlab.errors import ConfigError
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train.ranking_common import SPLITS, flat_metrics, ks, stats_for, tokenize_split


def baseline(cfg: C.ExperimentConfig, store: RunStore, progress: bool = False) -> Run:
    """random: the gold's rank under a seeded random order; first: the first-listed candidate
    ranks first (WordNet lists senses by frequency). Needs explicit candidate lists."""
    data = load_ranking(cfg.data, cfg.ranking)
    if data.candidates != "list":
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


def run(cfg: C.ExperimentConfig, store: RunStore, progress: bool = True, callback=None) -> Run:
    """One ranking run of any mode (see the module docstring)."""
    if cfg.encode.add_tokens:
        raise ConfigError("encode.add_tokens is for fine-tuning a classifier (encoderlab run); a ranking run "
                          "keeps its encoder's tokenizer: fine-tune with add_tokens first, then rank with "
                          "model.path = \"run:ID\"")
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
