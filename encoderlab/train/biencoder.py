"""The bi-encoder recipe: setup -> loop (in-batch negatives) -> evaluate (rank the candidate list,
or retrieve top-k from the dictionary index of each domain) -> best checkpoint -> test -> save.

`ranking.mode = "zero-shot"` is the same recipe without training: the untrained model.path
encoder, no markers, mean pooling and cosine (the issue's zero-shot baseline)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from encoderlab import config as C
from encoderlab import machine
from encoderlab.encode.budget import single_batch
from encoderlab.models import ranking as RM
from encoderlab.store import space
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train import checkpoint
from encoderlab.train.loop import ProgressBar, autocast, emitter, sigterm_as_interrupt
from encoderlab.train.optim import make_optimizer, make_scheduler
from encoderlab.train.ranking_common import SPLITS, Running, flat_metrics, optimizer_step
from encoderlab.train.retriever import BiSetup, evaluate, setup


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
    with store.running(run, state, restarts="ranking runs restart"), sigterm_as_interrupt():
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
