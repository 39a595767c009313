"""The bi-encoder recipe: setup -> loop (in-batch negatives) -> evaluate (rank the candidate list,
or retrieve top-k from the dictionary index of each domain) -> best checkpoint -> test -> save.

`ranking.mode = "zero-shot"` is the same recipe without training: the untrained model.path
encoder, no markers, mean pooling and cosine (the issue's zero-shot baseline)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from encoderlab import machine
from encoderlab import config as C
from encoderlab import metrics as M
from encoderlab.data.ranking import RankData, load_ranking
from encoderlab.encode.budget import Segments, single_batch
from encoderlab.models import ranking as RM
from encoderlab.retrieval import VectorIndex
from encoderlab.store import space
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train import checkpoint
from encoderlab.train.fit import ProgressBar, autocast, emitter, pick_device
from encoderlab.train.optim import make_optimizer, make_scheduler
from encoderlab.train.ranking import (SPLITS, Running, SplitTokens, dictionary_tokens, flat_metrics, ks,
                                      optimizer_step, run_status, tokenize_split)


@dataclass
class BiSetup:
    cfg: C.ExperimentConfig
    data: RankData
    model: RM.BiEncoder
    tokenizer: object
    tokens: dict[str, SplitTokens]
    dict_segs: Segments | None       # dictionary entries of the used domains
    dict_rows: np.ndarray | None     # their rows in data.dictionary
    device: torch.device
    dict_pos: dict | None = None      # dictionary row -> position in dict_segs (training lookups)
    domain_pos: dict | None = None    # training domain -> positions of its entries (random negatives)


def setup(cfg: C.ExperimentConfig, store_root=None) -> BiSetup:
    machine.apply_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    zero = cfg.ranking.mode == "zero-shot"
    if zero:   # the baseline as the issue defines it, whatever the file says
        cfg = C.replace(cfg, **{"ranking.score": "cosine", "model.head.pooling": "mean"})
    data = load_ranking(cfg.data, cfg.ranking)
    model, tok, _ = RM.build(cfg.model, cfg.ranking, store_root, markers=cfg.ranking.markers and not zero)
    device = pick_device(cfg.train.device)
    model.to(device)
    markers = cfg.ranking.markers and not zero
    tokens = {s: tokenize_split(tok, getattr(data, s), cfg.ranking, markers, reserve=2) for s in SPLITS}
    segs, rows = dictionary_tokens(tok, data, cfg.ranking, 2) if data.candidates == "dictionary" else (None, None)
    return BiSetup(cfg, data, model, tok, tokens, segs, rows, device)


@torch.inference_mode()
def embed(model: RM.BiEncoder, tok, segs: list[list[int]], side: str, device, precision: str,
          batch_size: int = 128) -> np.ndarray:
    """(N, H) vectors of contexts (side "ctx") or candidates, longest first, in input order."""
    model.eval()
    fn = model.embed_contexts if side == "ctx" else model.embed_candidates
    order = np.argsort([-len(s) for s in segs], kind="stable")
    out = None
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = {k: v.to(device) for k, v in single_batch(tok, [segs[j] for j in idx]).items()}
        with autocast(device, precision):
            v = fn(**batch).float().cpu().numpy()
        if out is None:
            out = np.empty((len(segs), v.shape[1]), dtype=np.float32)
        out[idx] = v
    return out


def retrieve(s: BiSetup, split: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k dictionary rows (N, k) of each context from its own domain's index, and the gold's
    1-based rank in them (0 = not retrieved). The dictionary is encoded once per call."""
    sp, d = getattr(s.data, split), s.data.dictionary
    tc = s.cfg.train
    ctx = embed(s.model, s.tokenizer, s.tokens[split].ctx.ids, "ctx", s.device, tc.precision, tc.eval_batch_size)
    doms = np.asarray(d.domains)[s.dict_rows]
    needed = np.isin(doms, sorted(set(sp.domains)))
    vecs = np.zeros((len(s.dict_rows), ctx.shape[1]), dtype=np.float32)
    pos = np.flatnonzero(needed)
    vecs[pos] = embed(s.model, s.tokenizer, [s.dict_segs.ids[p] for p in pos], "cand", s.device,
                      tc.precision, tc.eval_batch_size)
    top = np.full((len(sp), k), -1, dtype=np.int64)
    ranks = np.zeros(len(sp), dtype=np.int64)
    ex_doms = np.asarray(sp.domains)
    for dom in sorted(set(sp.domains)):
        members = np.flatnonzero(doms == dom)
        ex = np.flatnonzero(ex_doms == dom)
        _, hits = VectorIndex(vecs[members]).search(ctx[ex], k)
        rows = s.dict_rows[members][hits]                                               # (n, k')
        top[ex, :rows.shape[1]] = rows
        for j, i in enumerate(ex):
            found = np.flatnonzero(rows[j] == d.row[sp.gold[i]])
            ranks[i] = found[0] + 1 if len(found) else 0
    return top, ranks


def list_ranks(s: BiSetup, split: str) -> np.ndarray:
    """Gold rank of each context among its own candidate list, by score."""
    t, tc = s.tokens[split], s.cfg.train
    ctx = embed(s.model, s.tokenizer, t.ctx.ids, "ctx", s.device, tc.precision, tc.eval_batch_size)
    cand = embed(s.model, s.tokenizer, t.cand.ids, "cand", s.device, tc.precision, tc.eval_batch_size)
    labels = getattr(s.data, split).labels
    return np.asarray([M.gold_ranks((ctx[i] @ cand[idx].T)[None], labels[i:i + 1])[0]
                       for i, idx in enumerate(t.cand_index)])


def evaluate(s: BiSetup, split: str) -> dict:
    k_max = max(ks(s.cfg.ranking))
    ranks = retrieve(s, split, k_max)[1] if s.data.candidates == "dictionary" else list_ranks(s, split)
    return M.ranking(ranks, getattr(s.data, split).domains, ks(s.cfg.ranking))


def _train_step_batch(s: BiSetup, idx: np.ndarray, rng: np.random.Generator) -> tuple[dict, dict, torch.Tensor]:
    """Contexts `idx`, their gold candidates and hard negatives (deduplicated: a candidate shared
    by two contexts appears once, so it is never its own negative); labels point at each gold."""
    t, sp, rc = s.tokens["train"], s.data.train, s.cfg.ranking
    keys, segs, labels = {}, [], []

    def add(key, seg) -> int:
        if key not in keys:
            keys[key] = len(segs)
            segs.append(seg)
        return keys[key]

    for i in idx:
        if s.data.candidates == "list":
            cands = t.cand_index[i]
            labels.append(add(cands[sp.labels[i]], t.cand.ids[cands[sp.labels[i]]]))
            others = [c for j, c in enumerate(cands) if j != sp.labels[i]]
        else:
            gold_pos = s.dict_pos[s.data.dictionary.row[sp.gold[i]]]
            labels.append(add(gold_pos, s.dict_segs.ids[gold_pos]))
            others = s.domain_pos[sp.domains[i]]
        for c in rng.choice(others, min(rc.hard_negatives, len(others)), replace=False) if rc.hard_negatives \
                and len(others) else []:
            add(int(c), (t.cand.ids if s.data.candidates == "list" else s.dict_segs.ids)[int(c)])
    ctx = single_batch(s.tokenizer, [t.ctx.ids[i] for i in idx])
    return ctx, single_batch(s.tokenizer, segs), torch.tensor(labels)


def fit_bi(cfg: C.ExperimentConfig, store: RunStore, progress: bool = True, callback=None) -> Run:
    s = setup(cfg, store.root)
    cfg = s.cfg
    if s.data.candidates == "dictionary":   # dictionary row -> position among the tokenized entries
        s.dict_pos = {int(r): p for p, r in enumerate(s.dict_rows)}
        doms = np.asarray(s.data.dictionary.domains)[s.dict_rows]
        s.domain_pos = {d: np.flatnonzero(doms == d) for d in set(s.data.train.domains)}
    summary = {"mode": cfg.ranking.mode, "candidates": s.data.candidates,
               "sizes": {k: len(getattr(s.data, k)) for k in SPLITS},
               "dictionary_entries": 0 if s.dict_rows is None else int(len(s.dict_rows)),
               "context_truncated": {k: t.ctx.truncated / max(len(t.ctx), 1) for k, t in s.tokens.items()}}
    run = store.create(cfg, [], task="ranking", data=summary,
                       **machine.run_fields(cfg.train.precision, cfg.train.threads, s.device))
    emit = emitter(run, callback)
    state = {"step": 0, "best": None}
    with run_status(run, state):
        if cfg.ranking.mode == "bi":
            _loop(s, run, emit, state, progress)
        return _finish(s, run, emit, state)


def _validate(s: BiSetup, run: Run, emit, state: dict, epoch: float, opt, sched) -> None:
    scores = evaluate(s, "validation")
    s.model.train()
    emit({"split": "validation", "step": state["step"], "epoch": epoch, "metrics": flat_metrics(scores)})
    if state["best"] is None or scores["mrr"] > state["best"]["value"]:
        state["best"] = {"metric": "mrr", "value": scores["mrr"], "step": state["step"], "epoch": epoch}
    ckpt = run.dir / "checkpoints"
    checkpoint.save(ckpt, s.model, opt, sched, state)
    checkpoint.prune(ckpt, s.cfg.train.keep_checkpoints, {f"step-{state['best']['step']}"})
    run.update(steps_done=state["step"], best_metric="mrr", best_value=state["best"]["value"])


def _loop(s: BiSetup, run: Run, emit, state: dict, progress: bool) -> None:
    tc = s.cfg.train
    n = len(s.data.train)
    steps_per_epoch = math.ceil(n / tc.batch_size)
    total = steps_per_epoch * tc.epochs if not tc.max_steps else min(steps_per_epoch * tc.epochs, tc.max_steps)
    opt = make_optimizer(s.model, tc)
    sched = make_scheduler(opt, tc, total)
    s.model.train()
    with ProgressBar(progress, total, 0, "bi-encoder") as bar:
        for epoch in range(tc.epochs):
            rng = np.random.default_rng(tc.seed * 100003 + epoch)
            order = rng.permutation(n)
            tr = Running()
            for b in range(0, n, tc.batch_size):
                ctx, cand, labels = _train_step_batch(s, order[b:b + tc.batch_size], rng)
                with autocast(s.device, tc.precision):
                    out = s.model({k: v.to(s.device) for k, v in ctx.items()},
                                  {k: v.to(s.device) for k, v in cand.items()}, labels.to(s.device))
                optimizer_step(s.model, opt, sched, out["loss"], tc.max_grad_norm)
                state["step"] += 1
                bar.advance(epoch, tr.add(out, labels))
                if tc.max_steps and state["step"] >= tc.max_steps:
                    break
            emit({"split": "train", "step": state["step"], "epoch": epoch + 1, "metrics": tr.metrics(sched)})
            _validate(s, run, emit, state, epoch + 1.0, opt, sched)
            if tc.max_steps and state["step"] >= tc.max_steps:
                break


def _finish(s: BiSetup, run: Run, emit, state: dict) -> Run:
    if state["best"] is not None:
        checkpoint.load_weights(run.dir / "checkpoints" / f"step-{state['best']['step']}", s.model)
    results = {}
    for split in ("validation", "test"):
        t0 = time.perf_counter()
        scores = evaluate(s, split)
        results[split] = scores
        if split == "validation" and state["best"] is None:   # zero-shot: one evaluation, no training
            emit({"split": "validation", "step": 0, "epoch": 0, "metrics": flat_metrics(scores)})
        emit({"split": "final_validation" if split == "validation" else "test",
              "step": state["best"]["step"] if state["best"] else 0,
              "epoch": state["best"]["epoch"] if state["best"] else 0,
              "metrics": flat_metrics(scores, {"eval_seconds": time.perf_counter() - t0}),
              "detail": {"per_domain": scores["per_domain"]}})
    if s.cfg.ranking.mode == "bi":
        RM.save(s.model, s.tokenizer, run.dir / "model", {"mode": "bi", "ranking": C.to_dict(s.cfg.ranking)})
    run.update(status="completed", finished=now(), test_accuracy=results["test"]["accuracy"], message="")
    space.lean_completed(run.dir)
    return run


def retriever(cfg: C.ExperimentConfig, store_root) -> BiSetup:
    """The bi-encoder that feeds a cross-encoder its top-k in dictionary mode: a stored bi-encoder
    run (`run:ID`), or the zero-shot encoder."""
    rc = cfg.ranking
    if rc.retriever == "zero-shot":
        return setup(C.replace(cfg, **{"ranking.mode": "zero-shot"}), store_root)
    from encoderlab.errors import ConfigError
    if not rc.retriever.startswith("run:"):
        raise ConfigError(f"ranking.retriever = '{rc.retriever}': use run:ID of a bi-encoder run or zero-shot")
    store = RunStore(store_root)
    stored = store.get(rc.retriever.removeprefix("run:"))
    folder = stored.dir / "model"
    if not (folder / "encoderlab.json").exists():
        raise ConfigError(f"ranking.retriever: run {stored.id} has no saved bi-encoder (status {stored.status})")
    brc = replace(stored.config().ranking, mode="bi", top_k=rc.top_k)
    bcfg = replace(cfg, ranking=brc)
    model, tok = RM.load_biencoder(folder, brc)
    device = pick_device(cfg.train.device)
    model.to(device)
    data = load_ranking(cfg.data, brc)
    tokens = {sp: tokenize_split(tok, getattr(data, sp), brc, brc.markers, 2) for sp in SPLITS}
    segs, rows = dictionary_tokens(tok, data, brc, 2)
    return BiSetup(bcfg, data, model, tok, tokens, segs, rows, device)
