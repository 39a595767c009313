"""The cross-encoder recipe: setup (candidates = the explicit list, or the retriever's top-k from
the dictionary) -> loop (K_train sampled candidates per context, softmax over them) -> evaluate on
all candidates -> best checkpoint -> test -> save.

The first stage (the `ranking.retriever`: a stored bi-encoder or the zero-shot encoder) scores every
context's candidates once. Its scores pick the hardest negatives for training (`ranking.negatives`)
and are fused with the reranker's at evaluation (`ranking.rerank_alpha`, tuned on validation by
default, see train/fusion.py); a WiSE-FT weight ensemble of the starting and fine-tuned encoder is
optional (`ranking.wise`). The reported `accuracy` is the fused system's; `reranker_accuracy` and
`retriever_accuracy` (overall and per domain) are the two stages alone.

In dictionary mode the reported `accuracy` is end to end (a context whose gold entry was not
retrieved counts as wrong); `normalized_accuracy` is over the contexts whose gold was retrieved and
`retrieval_recall` the retriever's recall@top_k, so accuracy = retrieval_recall x normalized_accuracy."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from encoderlab import machine
from encoderlab import config as C
from encoderlab import metrics as M
from encoderlab.data.ranking import RankData, load_ranking
from encoderlab.encode.budget import Segments, pair_batch
from encoderlab.encode.text import train_batches
from encoderlab.models import ranking as RM
from encoderlab.store import space
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train import checkpoint
from encoderlab.train import fusion
from encoderlab.train.loop import ProgressBar, autocast, emitter, pick_device, sigterm_as_interrupt
from encoderlab.train.optim import apply_step, make_optimizer, make_scheduler
from encoderlab.train.ranking_common import (SPLITS, Running, dictionary_tokens, flat_metrics, ks,
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
    first: list[np.ndarray] | None = None  # the retriever's score of each entry of `lists`


def _needs_first(rc: C.RankingConfig, candidates: str) -> bool:
    return candidates == "dictionary" or rc.negatives == "hardest" or rc.rerank_alpha != 1.0


def _views(cfg: C.ExperimentConfig, data: RankData, tok, store_root) -> dict[str, View]:
    rc = cfg.ranking
    tokens = {s: tokenize_split(tok, getattr(data, s), rc, rc.markers, reserve=1) for s in SPLITS}
    if not _needs_first(rc, data.candidates):
        return {s: View(t.ctx, t.cand, t.cand_index, getattr(data, s).labels, getattr(data, s).domains)
                for s, t in tokens.items()}
    stage = first_stage(cfg, data, store_root)
    if data.candidates == "list":
        return {s: View(t.ctx, t.cand, t.cand_index, getattr(data, s).labels, getattr(data, s).domains,
                        first=stage[s]) for s, t in tokens.items()}
    segs, rows = dictionary_tokens(tok, data, rc, reserve=1)
    pos = {int(r): p for p, r in enumerate(rows)}
    views = {}
    for s in SPLITS:
        top, ranks, first = stage[s]
        lists = [[pos[int(r)] for r in row if r >= 0] for row in top]
        gold = np.asarray([pos[data.dictionary.row[g]] for g in getattr(data, s).gold])
        views[s] = View(tokens[s].ctx, segs, lists, ranks - 1, getattr(data, s).domains, ranks, gold,
                        [f[row >= 0] for f, row in zip(first, top)])
    return views


def _stage_key(cfg: C.ExperimentConfig, store_root) -> str:
    """What the first stage's output depends on: the retriever (a stored run's id, or the zero-shot
    model), the data and its caps, the candidate mode and budgets, the retrieval depth."""
    import hashlib
    import json
    rc = cfg.ranking
    retr = rc.retriever
    if retr.startswith("run:") and store_root:      # a name resolves to the run it means now
        retr = "run:" + RunStore(store_root).get(retr.removeprefix("run:")).id
    parts = {"retriever": retr, "data": C.to_dict(cfg.data),
             "ranking": {k: getattr(rc, k) for k in ("candidates", "dictionary", "top_k", "context_tokens",
                                                      "candidate_tokens", "context_truncation",
                                                      "candidate_truncation")}}
    if rc.retriever == "zero-shot":
        parts["model"] = C.to_dict(cfg.model)
        parts["seed"] = cfg.train.seed if cfg.model.init != "pretrained" else 0   # random init differs per seed
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def first_stage(cfg: C.ExperimentConfig, data: RankData, store_root) -> dict:
    """Per split, the retriever's output: list mode -> each context's scores over its own list;
    dictionary mode -> (top rows (N, top_k), gold ranks, scores (N, top_k)). Computed once per
    retriever + data + budgets and kept in the store's cache (seeds and reruns of a configuration
    reuse it: retrieving the training domains' dictionary is the slow part of a linking run)."""
    from encoderlab.store import atomic
    from encoderlab.train.retriever import list_scores, retrieve, retriever
    path = Path(store_root) / ".cache" / "first-stage" / f"{_stage_key(cfg, store_root)}.npz" if store_root else None
    if path is not None and path.exists():
        with np.load(path) as z:
            if data.candidates == "list":
                return {s: np.split(z[f"{s}_scores"], z[f"{s}_offsets"][1:-1]) for s in SPLITS}
            return {s: (z[f"{s}_top"], z[f"{s}_ranks"], z[f"{s}_scores"]) for s in SPLITS}
    bi = retriever(cfg, store_root)
    if data.candidates == "list":
        out = {s: list_scores(bi, s) for s in SPLITS}
        arrays = {f"{s}_{k}": v for s in SPLITS for k, v in
                  (("scores", np.concatenate(out[s]).astype(np.float32)),
                   ("offsets", np.cumsum([0] + [len(x) for x in out[s]])))}
    else:
        out = {s: retrieve(bi, s, cfg.ranking.top_k) for s in SPLITS}
        arrays = {f"{s}_{k}": v for s in SPLITS for k, v in zip(("top", "ranks", "scores"), out[s])}
    del bi
    if path is not None:
        import io
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic.write_bytes(path, buf.getvalue())
    return out


def save_first_stage(path, views: dict[str, View]) -> None:
    """The mined candidates and their retriever scores, per split, flat with offsets (the run's
    record of what the reranker was trained and evaluated on)."""
    arrays = {}
    for s, v in views.items():
        if v.first is None:
            continue
        arrays[f"{s}_offsets"] = np.cumsum([0] + [len(x) for x in v.lists])
        arrays[f"{s}_candidates"] = np.asarray([c for x in v.lists for c in x], dtype=np.int64)
        arrays[f"{s}_scores"] = np.concatenate(v.first).astype(np.float32) if v.first else np.zeros(0, np.float32)
    if arrays:
        np.savez_compressed(path, **arrays)


def sample_candidates(cands: list[int], gold: int, gold_seg: int, k: int, rng,
                      first: np.ndarray | None = None) -> tuple[list[int], int]:
    """Gold + k-1 other candidates, shuffled (k = 0 keeps all): drawn without replacement, or with
    `first` (the retriever's scores of `cands`) its k-1 highest-scored wrong ones. A gold the
    retriever missed (gold = -1) is added from `gold_seg`, so training always has a positive.
    Returns (candidates, index of the gold among them)."""
    others = [j for j in range(len(cands)) if j != gold]
    if k and len(others) > k - 1:
        if first is not None:
            others = sorted(others, key=lambda j: -first[j])[:k - 1]
        else:
            others = [others[j] for j in np.sort(rng.choice(len(others), k - 1, replace=False))]
    others = [cands[j] for j in others]
    chosen = others + [cands[gold] if gold >= 0 else gold_seg]
    perm = rng.permutation(len(chosen))
    return [chosen[j] for j in perm], int(np.flatnonzero(perm == len(chosen) - 1)[0])


@torch.inference_mode()
def score(model: RM.CrossEncoder, tok, view: View, device, precision: str, pairs_per_batch: int):
    """The reranker's scores of every context's candidates (aligned with `view.lists`), and the
    batches' (ctx, cand) pairs."""
    model.eval()
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32) for _ in view.lists]
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
        for row, i in enumerate(idx):
            out[i] = logits[row, :len(view.lists[i])]
    return out, pairs


def tuned_alpha(view: View, rerank: list[np.ndarray], rc: C.RankingConfig) -> tuple[float, list[dict]]:
    """rerank_alpha as configured, or tuned on this (validation) view; 1 without first-stage scores."""
    if view.first is None or rc.rerank_alpha == 1.0:
        return 1.0, []
    if rc.rerank_alpha >= 0:
        return rc.rerank_alpha, []
    return fusion.tune_alpha(rerank, view.first, view.labels, view.domains)


def judge(view: View, rerank: list[np.ndarray], cfg: C.ExperimentConfig, alpha: float) -> tuple[dict, dict]:
    """Metrics of the fused scores at `alpha`, and beside them the reranker and the retriever alone
    (overall and per domain) and, in dictionary mode, retrieval recall and normalized accuracy."""
    k = ks(cfg.ranking)
    final = fusion.fuse(rerank, view.first, alpha) if view.first is not None else rerank
    ranks = fusion.gold_ranks(final, view.labels)
    scores = M.ranking(ranks, view.domains, k)
    extra = {"rerank_alpha": alpha}
    stages = {"reranker": rerank, "retriever": view.first} if view.first is not None else {}
    for name, sc in stages.items():
        alone = M.ranking(fusion.gold_ranks(sc, view.labels), view.domains, (1,))
        extra[f"{name}_accuracy"] = alone["accuracy"]
        extra[f"domain_mean/{name}_accuracy"] = alone["domain_mean"]["accuracy"]
        extra.update({f"{name}_accuracy/{d}": p["accuracy"] for d, p in alone["per_domain"].items()})
    if view.retrieved is not None:
        hit = view.retrieved > 0
        norm = M.ranking(ranks[hit], [d for d, h in zip(view.domains, hit) if h], ks(cfg.ranking))
        rec = M.ranking(view.retrieved, view.domains, (cfg.ranking.top_k,))
        extra |= {"normalized_accuracy": norm["accuracy"], "retrieval_recall": rec[f"recall@{cfg.ranking.top_k}"],
                 "domain_mean/retrieval_recall": rec["domain_mean"][f"recall@{cfg.ranking.top_k}"],
                 "domain_mean/normalized_accuracy": norm["domain_mean"].get("accuracy", 0.0)}
        for d, p in rec["per_domain"].items():
            extra[f"retrieval_recall/{d}"] = p[f"recall@{cfg.ranking.top_k}"]
            extra[f"normalized_accuracy/{d}"] = norm["per_domain"].get(d, {}).get("accuracy", 0.0)
    return scores, extra


def evaluate(model, tok, view: View, cfg: C.ExperimentConfig, device,
             alpha: float | None = None) -> tuple[dict, dict, list, list[dict]]:
    """Score `view`; fuse at `alpha` (None: as configured, tuned on this view when -1). Returns
    (metrics, extra metrics, pairs, the alpha curve when tuned)."""
    rerank, pairs = score(model, tok, view, device, cfg.train.precision, cfg.train.eval_batch_size)
    curve: list[dict] = []
    if alpha is None:
        alpha, curve = tuned_alpha(view, rerank, cfg.ranking)
    scores, extra = judge(view, rerank, cfg, alpha)
    return scores, extra, pairs, curve


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
    save_first_stage(run.dir / "first_stage.npz", views)
    start = fusion.snapshot(model.encoder) if rc.wise != 1.0 else None    # WiSE-FT's starting point
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
            lengths = np.asarray([len(x) for x in train.ctx.ids])
            hardest = train.first if rc.negatives == "hardest" else None
            for epoch in range(tc.epochs):
                if epoch and rc.negatives == "hardest" and rc.refresh_negatives:
                    # mine again with the reranker as it is now: its own hardest mistakes next
                    hardest, _ = score(model, tok, train, device, tc.precision, tc.eval_batch_size)
                    model.train()
                rng = np.random.default_rng(tc.seed * 100003 + epoch)
                tr, pairs = Running(), []
                # contexts of similar length together (train.bucket), batch order shuffled
                for idx in train_batches(lengths, tc.batch_size, tc.seed * 100003 + epoch, tc.bucket):
                    idx = [int(i) for i in idx]
                    lists, labels = [], []
                    for i in idx:
                        cs, label = sample_candidates(train.lists[i], int(train.labels[i]),
                                                      -1 if train.gold_seg is None else int(train.gold_seg[i]),
                                                      rc.k_train, rng, None if hardest is None else hardest[i])
                        lists.append(cs)
                        labels.append(label)
                    pairs.append([(i, c) for i, cs in zip(idx, lists) for c in cs])
                    batch = pair_batch(tok, [train.ctx.ids[i] for i in idx],
                                       [[train.cand.ids[c] for c in cs] for cs in lists])
                    y = torch.tensor(labels)
                    with autocast(device, tc.precision):
                        out = model(**{k: v.to(device) for k, v in batch.items()}, labels=y.to(device))
                    out["loss"].backward()
                    apply_step(model, opt, sched, tc.max_grad_norm)
                    state["step"] += 1
                    bar.advance(epoch, tr.add(out, y))
                    if tc.max_steps and state["step"] >= tc.max_steps:
                        break
                if epoch == 0:
                    run.update(data={**summary, "budget_train": stats_for_view(train, pairs, rc)})
                emit({"split": "train", "step": state["step"], "epoch": epoch + 1, "metrics": tr.metrics(sched)})
                scores, extra, _, curve = evaluate(model, tok, views["validation"], cfg, device)
                model.train()
                emit({"split": "validation", "step": state["step"], "epoch": epoch + 1.0,
                      "metrics": flat_metrics(scores, extra)})
                if state["best"] is None or scores["accuracy"] > state["best"]["value"]:
                    state["best"] = {"metric": "accuracy", "value": scores["accuracy"], "step": state["step"],
                                     "epoch": epoch + 1.0, "rerank_alpha": extra["rerank_alpha"]}
                    best_eval["validation"] = (scores, extra, [], curve)
                checkpoint.save(ckpt, model, opt, sched, state)
                checkpoint.prune(ckpt, tc.keep_checkpoints, {f"step-{state['best']['step']}"})
                run.update(steps_done=state["step"], best_metric="accuracy", best_value=state["best"]["value"])
                if tc.max_steps and state["step"] >= tc.max_steps:
                    break
        return _finish(run, model, tok, views, cfg, device, emit, state, summary, best_eval, start)


def stats_for_view(view: View, pairs, rc) -> dict:
    from encoderlab.train.ranking_common import SplitTokens
    return stats_for(SplitTokens(view.ctx, view.cand, None), pairs, rc)


def wise_select(model, tok, view: View, cfg, device, start: dict) -> tuple[float, tuple, list[dict]]:
    """WiSE-FT: the encoder weight w in (1 - w) * start + w * fine-tuned with the best validation
    accuracy (fusion alpha tuned per w when configured so); the model is left at that w. Returns
    (w, its validation evaluation, the curve)."""
    def at(w):
        ev = evaluate(model, tok, view, cfg, device)
        scores, extra = ev[0], ev[1]
        return {"rerank_alpha": extra["rerank_alpha"], "accuracy": scores["accuracy"], "mrr": scores["mrr"]}, ev
    return fusion.wise_search(model.encoder, start, fusion.snapshot(model.encoder), fusion.wise_grid(cfg.ranking.wise),
                              at)


def _finish(run: Run, model, tok, views, cfg, device, emit, state, summary, known: dict, start) -> Run:
    checkpoint.load_weights(run.dir / "checkpoints" / f"step-{state['best']['step']}", model)
    results, chosen = {}, {}
    if start is not None:
        w, known["validation"], wcurve = wise_select(model, tok, views["validation"], cfg, device, start)
        chosen["wise"] = {"weight": w, "curve": wcurve}
    scores, extra, _, curve = known["validation"]
    alpha = extra.get("rerank_alpha", 1.0)
    if curve:
        chosen["rerank"] = {"alpha": alpha, "curve": curve}
    for split in ("validation", "test"):
        t0 = time.perf_counter()
        scores, extra, pairs, _ = known.get(split) or evaluate(model, tok, views[split], cfg, device, alpha)
        results[split] = scores
        emit({"split": "final_validation" if split == "validation" else "test", "step": state["best"]["step"],
              "epoch": state["best"]["epoch"],
              "metrics": flat_metrics(scores, {**extra, "eval_seconds": time.perf_counter() - t0,
                                               **({"wise": chosen["wise"]["weight"]} if "wise" in chosen else {})}),
              "detail": {"per_domain": scores["per_domain"]}})
        if split == "test":
            summary = {**run.info.get("data", summary),
                       "budget_test": stats_for_view(views["test"], pairs, cfg.ranking)}
    RM.save(model, tok, run.dir / "model", {"mode": "cross", "ranking": C.to_dict(cfg.ranking),
                                            "rerank_alpha": alpha, **({"wise": chosen["wise"]["weight"]}
                                                                      if "wise" in chosen else {})})
    run.update(status="completed", finished=now(), test_accuracy=results["test"]["accuracy"], data=summary,
               message="", **chosen)
    space.lean_completed(run.dir)
    return run
