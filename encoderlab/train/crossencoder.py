"""The cross-encoder recipe: setup (candidates = the explicit list, or the retriever's top-k from
the dictionary) -> loop (K_train sampled candidates per context, softmax over them) -> evaluate on
all candidates -> best checkpoint -> test -> save.

In dictionary mode the reported `accuracy` is end to end (a context whose gold entry was not
retrieved counts as wrong); `normalized_accuracy` is over the contexts whose gold was retrieved and
`retrieval_recall` the retriever's recall@top_k, so accuracy = retrieval_recall x normalized_accuracy."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from encoderlab import machine
from encoderlab import config as C
from encoderlab import metrics as M
from encoderlab.data.ranking import RankData, load_ranking
from encoderlab.encode.budget import Segments, pair_batch
from encoderlab.models import ranking as RM
from encoderlab.store import space
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train import checkpoint
from encoderlab.train.loop import ProgressBar, autocast, emitter, pick_device, sigterm_as_interrupt
from encoderlab.train.optim import make_optimizer, make_scheduler
from encoderlab.train.ranking_common import (SPLITS, Running, dictionary_tokens, flat_metrics, ks, optimizer_step,
                                             stats_for, tokenize_split)


@dataclass
class View:
    """One split as the cross-encoder sees it: context segments, candidate segments, and per
    example its candidates (indices into `cand`) and the gold's position among them (-1 = absent)."""
    ctx: Segments
    cand: Segments
    lists: list[list[int]]
    labels: np.ndarray
    domains: list[str]
    retrieved: np.ndarray | None = None    # dictionary mode: gold rank from the retriever (0 = missed)
    gold_seg: np.ndarray | None = None     # dictionary mode: the gold entry's index into `cand`


def _views(cfg: C.ExperimentConfig, data: RankData, tok, store_root) -> dict[str, View]:
    rc = cfg.ranking
    tokens = {s: tokenize_split(tok, getattr(data, s), rc, rc.markers, reserve=1) for s in SPLITS}
    if data.candidates == "list":
        return {s: View(t.ctx, t.cand, t.cand_index, getattr(data, s).labels, getattr(data, s).domains)
                for s, t in tokens.items()}
    from encoderlab.train.retriever import retrieve, retriever
    bi = retriever(cfg, store_root)
    segs, rows = dictionary_tokens(tok, data, rc, reserve=1)
    pos = {int(r): p for p, r in enumerate(rows)}
    views = {}
    for s in SPLITS:
        top, ranks = retrieve(bi, s, rc.top_k)
        lists = [[pos[int(r)] for r in row if r >= 0] for row in top]
        gold = np.asarray([pos[data.dictionary.row[g]] for g in getattr(data, s).gold])
        views[s] = View(tokens[s].ctx, segs, lists, ranks - 1, getattr(data, s).domains, ranks, gold)
    del bi
    return views


def sample_candidates(cands: list[int], gold: int, gold_seg: int, k: int, rng) -> tuple[list[int], int]:
    """Gold + k-1 other candidates drawn without replacement, shuffled (k = 0 keeps all); a gold
    the retriever missed (gold = -1) is added from `gold_seg`, so training always has a positive.
    Returns (candidates, index of the gold among them)."""
    others = [c for j, c in enumerate(cands) if j != gold]
    if k and len(others) > k - 1:
        others = [others[j] for j in np.sort(rng.choice(len(others), k - 1, replace=False))]
    chosen = others + [cands[gold] if gold >= 0 else gold_seg]
    perm = rng.permutation(len(chosen))
    return [chosen[j] for j in perm], int(np.flatnonzero(perm == len(chosen) - 1)[0])


@torch.inference_mode()
def score(model: RM.CrossEncoder, tok, view: View, device, precision: str, pairs_per_batch: int):
    """Gold ranks of every context over all of its candidates, and the batches' (ctx, cand) pairs."""
    model.eval()
    ranks = np.zeros(len(view.lists), dtype=np.int64)
    order = np.argsort([-len(view.ctx.ids[i]) for i in range(len(view.lists))], kind="stable")
    batches, cur = [], []
    for i in order:
        cur.append(int(i))
        if sum(len(view.lists[j]) for j in cur) >= pairs_per_batch:
            batches.append(cur)
            cur = []
    batches += [cur] if cur else []
    pairs = []
    for idx in batches:
        idx = [i for i in idx if view.lists[i]]
        if not idx:
            continue
        batch = pair_batch(tok, [view.ctx.ids[i] for i in idx],
                           [[view.cand.ids[c] for c in view.lists[i]] for i in idx])
        pairs.append([(i, c) for i in idx for c in view.lists[i]])
        with autocast(device, precision):
            logits = model(**{k: v.to(device) for k, v in batch.items()})["logits"].float().cpu().numpy()
        ranks[idx] = M.gold_ranks(logits, view.labels[idx], batch["cand_mask"].numpy())
    return ranks, pairs


def evaluate(model, tok, view: View, cfg: C.ExperimentConfig, device) -> tuple[dict, dict, list]:
    ranks, pairs = score(model, tok, view, device, cfg.train.precision, cfg.train.eval_batch_size)
    scores = M.ranking(ranks, view.domains, ks(cfg.ranking))
    extra = {}
    if view.retrieved is not None:
        hit = view.retrieved > 0
        norm = M.ranking(ranks[hit], [d for d, h in zip(view.domains, hit) if h], ks(cfg.ranking))
        rec = M.ranking(view.retrieved, view.domains, (cfg.ranking.top_k,))
        extra = {"normalized_accuracy": norm["accuracy"], "retrieval_recall": rec[f"recall@{cfg.ranking.top_k}"],
                 "domain_mean/retrieval_recall": rec["domain_mean"][f"recall@{cfg.ranking.top_k}"],
                 "domain_mean/normalized_accuracy": norm["domain_mean"].get("accuracy", 0.0)}
        for d, p in rec["per_domain"].items():
            extra[f"retrieval_recall/{d}"] = p[f"recall@{cfg.ranking.top_k}"]
            extra[f"normalized_accuracy/{d}"] = norm["per_domain"].get(d, {}).get("accuracy", 0.0)
    return scores, extra, pairs


def fit_cross(cfg: C.ExperimentConfig, store: RunStore, progress: bool = True, callback=None) -> Run:
    machine.apply_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    data = load_ranking(cfg.data, cfg.ranking)
    model, tok, _ = RM.build(cfg.model, cfg.ranking, store.root)
    device = pick_device(cfg.train.device)
    model.to(device)
    views = _views(cfg, data, tok, store.root)
    tc, rc = cfg.train, cfg.ranking
    summary = {"mode": "cross", "candidates": data.candidates, "sizes": {k: len(getattr(data, k)) for k in SPLITS},
               "mean_k": {k: float(np.mean([len(x) for x in v.lists])) for k, v in views.items()}}
    run = store.create(cfg, [], task="ranking", data=summary, **machine.run_fields(tc.precision, tc.threads, device))
    emit = emitter(run, callback)
    state = {"step": 0, "best": None}
    best_eval: dict = {}        # the best checkpoint's validation scores: not scored twice
    n = len(data.train)
    total = math.ceil(n / tc.batch_size) * tc.epochs
    total = min(total, tc.max_steps) if tc.max_steps else total
    opt = make_optimizer(model, tc)
    sched = make_scheduler(opt, tc, total)
    train = views["train"]
    ckpt = run.dir / "checkpoints"
    with store.running(run, state, restarts="ranking runs restart"), sigterm_as_interrupt():
        with ProgressBar(progress, total, 0, "cross-encoder") as bar:
            model.train()
            for epoch in range(tc.epochs):
                rng = np.random.default_rng(tc.seed * 100003 + epoch)
                order = list(rng.permutation(n))
                tr, pairs = Running(), []
                for b in range(0, len(order), tc.batch_size):
                    idx = order[b:b + tc.batch_size]
                    lists, labels = [], []
                    for i in idx:
                        cs, label = sample_candidates(train.lists[i], int(train.labels[i]),
                                                      -1 if train.gold_seg is None else int(train.gold_seg[i]),
                                                      rc.k_train, rng)
                        lists.append(cs)
                        labels.append(label)
                    pairs.append([(i, c) for i, cs in zip(idx, lists) for c in cs])
                    batch = pair_batch(tok, [train.ctx.ids[i] for i in idx],
                                       [[train.cand.ids[c] for c in cs] for cs in lists])
                    y = torch.tensor(labels)
                    with autocast(device, tc.precision):
                        out = model(**{k: v.to(device) for k, v in batch.items()}, labels=y.to(device))
                    optimizer_step(model, opt, sched, out["loss"], tc.max_grad_norm)
                    state["step"] += 1
                    bar.advance(epoch, tr.add(out, y))
                    if tc.max_steps and state["step"] >= tc.max_steps:
                        break
                if epoch == 0:
                    run.update(data={**summary, "budget_train": stats_for_view(train, pairs, rc)})
                emit({"split": "train", "step": state["step"], "epoch": epoch + 1, "metrics": tr.metrics(sched)})
                scores, extra, _ = evaluate(model, tok, views["validation"], cfg, device)
                model.train()
                emit({"split": "validation", "step": state["step"], "epoch": epoch + 1.0,
                      "metrics": flat_metrics(scores, extra)})
                if state["best"] is None or scores["accuracy"] > state["best"]["value"]:
                    state["best"] = {"metric": "accuracy", "value": scores["accuracy"], "step": state["step"],
                                     "epoch": epoch + 1.0}
                    best_eval["validation"] = (scores, extra, [])
                checkpoint.save(ckpt, model, opt, sched, state)
                checkpoint.prune(ckpt, tc.keep_checkpoints, {f"step-{state['best']['step']}"})
                run.update(steps_done=state["step"], best_metric="accuracy", best_value=state["best"]["value"])
                if tc.max_steps and state["step"] >= tc.max_steps:
                    break
        return _finish(run, model, tok, views, cfg, device, emit, state, summary, best_eval)


def stats_for_view(view: View, pairs, rc) -> dict:
    from encoderlab.train.ranking_common import SplitTokens
    return stats_for(SplitTokens(view.ctx, view.cand, None), pairs, rc)


def _finish(run: Run, model, tok, views, cfg, device, emit, state, summary, known: dict) -> Run:
    checkpoint.load_weights(run.dir / "checkpoints" / f"step-{state['best']['step']}", model)
    results = {}
    for split in ("validation", "test"):
        t0 = time.perf_counter()
        scores, extra, pairs = known.get(split) or evaluate(model, tok, views[split], cfg, device)
        results[split] = scores
        emit({"split": "final_validation" if split == "validation" else "test", "step": state["best"]["step"],
              "epoch": state["best"]["epoch"],
              "metrics": flat_metrics(scores, {**extra, "eval_seconds": time.perf_counter() - t0}),
              "detail": {"per_domain": scores["per_domain"]}})
        if split == "test":
            summary = {**run.info.get("data", summary),
                       "budget_test": stats_for_view(views["test"], pairs, cfg.ranking)}
    RM.save(model, tok, run.dir / "model", {"mode": "cross", "ranking": C.to_dict(cfg.ranking)})
    run.update(status="completed", finished=now(), test_accuracy=results["test"]["accuracy"], data=summary,
               message="")
    space.lean_completed(run.dir)
    return run
