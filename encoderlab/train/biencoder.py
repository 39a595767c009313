"""The bi-encoder recipe: setup -> loop (in-batch negatives) -> evaluate (rank the candidate list,
or retrieve top-k from the dictionary index of each domain) -> best checkpoint -> test -> save.

Training batches are length-sorted when `train.bucket` (less padding of the contexts). With
`ranking.teacher` a cross-encoder run's scores of each context's candidates (train/bidistill.py) are
mixed into the loss; with `ranking.freeze_candidates` the candidate side is encoded once.

`ranking.mode = "zero-shot"` is the same recipe without training: the untrained model.path
encoder, no markers, mean pooling and cosine (the issue's zero-shot baseline)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from encoderlab import config as C
from encoderlab import machine
from encoderlab.encode.budget import single_batch
from encoderlab.encode.text import train_batches
from encoderlab.models import ranking as RM
from encoderlab.store import space
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train import bidistill as BD
from encoderlab.train import checkpoint
from encoderlab.train import fusion
from encoderlab.train.loop import ProgressBar, autocast, emitter, sigterm_as_interrupt
from encoderlab.train.optim import apply_step, make_optimizer, make_scheduler
from encoderlab.train.ranking_common import SPLITS, Running, flat_metrics
from encoderlab.train.retriever import BiSetup, embed, evaluate, setup


@dataclass
class TrainBatch:
    """One training step's inputs: contexts, the batch's candidates (positions into the candidate
    segments, deduplicated, in column order), each context's gold column, and with a teacher each
    context's scored candidates as columns (B, K), their mask, teacher scores and gold index."""
    ctx: dict
    cand_pos: list[int]
    labels: torch.Tensor
    distill: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def _cand_segments(s: BiSetup):
    """The segments training candidates are positions into: the unique list texts, or the dictionary."""
    return s.tokens["train"].cand if s.data.candidates == "list" else s.dict_segs


def _train_step_batch(s: BiSetup, idx: np.ndarray, rng: np.random.Generator,
                      ts: BD.TeacherScores | None = None) -> TrainBatch:
    """Contexts `idx`, their gold candidates, hard negatives and (with a teacher) their scored
    candidates, deduplicated: a candidate shared by two contexts appears once, so it is never its
    own negative; labels point at each gold."""
    t, sp, rc = s.tokens["train"], s.data.train, s.cfg.ranking
    keys: dict[int, int] = {}

    def add(pos) -> int:
        return keys.setdefault(int(pos), len(keys))

    labels, scored = [], []
    for i in idx:
        if s.data.candidates == "list":
            cands = t.cand_index[i]
            labels.append(add(cands[sp.labels[i]]))
            others = [c for j, c in enumerate(cands) if j != sp.labels[i]]
        else:
            labels.append(add(s.dict_pos[s.data.dictionary.row[sp.gold[i]]]))
            others = s.domain_pos[sp.domains[i]]
        for c in rng.choice(others, min(rc.hard_negatives, len(others)), replace=False) if rc.hard_negatives \
                and len(others) else []:
            add(c)
        if ts is not None:
            cands, scores, gold = ts.of(int(i))
            scored.append(([add(c) for c in cands], scores, gold))
    ctx = single_batch(s.tokenizer, [t.ctx.ids[i] for i in idx])
    return TrainBatch(ctx, list(keys), torch.tensor(labels), _distill_columns(scored) if scored else None)


def _distill_columns(scored: list[tuple[list[int], np.ndarray, int]]):
    """(cols, mask, teacher, gold): each context's scored candidates as batch columns, padded to K."""
    K = max(len(c) for c, _, _ in scored)
    cols = torch.zeros(len(scored), K, dtype=torch.long)
    mask = torch.zeros(len(scored), K, dtype=torch.bool)
    teacher = torch.zeros(len(scored), K)
    for r, (c, sc, _) in enumerate(scored):
        cols[r, :len(c)] = torch.tensor(c)
        mask[r, :len(c)] = True
        teacher[r, :len(c)] = torch.from_numpy(np.asarray(sc, dtype=np.float32))
    return cols, mask, teacher, torch.tensor([g for _, _, g in scored])


def padding_waste(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of pad tokens in the context batches ([CLS] segment [SEP], padded to each batch's longest)."""
    real = sum(int(lengths[b].sum()) + 2 * len(b) for b in batches)
    padded = sum((int(lengths[b].max()) + 2) * len(b) for b in batches if len(b))
    return 1.0 - real / max(padded, 1)


def context_lengths(s: BiSetup) -> np.ndarray:
    return np.asarray([len(x) for x in s.tokens["train"].ctx.ids], dtype=np.int64)


def epoch_batches(s: BiSetup, epoch: int) -> list[np.ndarray]:
    """The contexts of each step of `epoch`: seeded random batches, or length-sorted ones
    (`train.bucket`: encode.text.train_batches pools, sorts and cuts, then shuffles the batches)."""
    tc = s.cfg.train
    return train_batches(context_lengths(s), tc.batch_size, tc.seed * 100003 + epoch, tc.bucket)


def fit_bi(cfg: C.ExperimentConfig, store: RunStore, progress: bool = True, callback=None) -> Run:
    BD.check(cfg.ranking)
    if cfg.ranking.teacher:     # a wrong teacher is refused before any work
        BD.teacher_run(cfg.ranking.teacher, store)
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
    if cfg.ranking.mode == "bi":
        summary["context_padding_waste"] = padding_waste(context_lengths(s), epoch_batches(s, 0))
    run = store.create(cfg, [], task="ranking", data=summary,
                       **machine.run_fields(cfg.train.precision, cfg.train.threads, s.device))
    emit = emitter(run, callback)
    state = {"step": 0, "best": None}
    with store.running(run, state, restarts="ranking runs restart"), sigterm_as_interrupt():
        start = None
        if cfg.ranking.mode == "bi":
            start = fusion.snapshot(s.model)        # the starting weights: reported beside, WiSE-FT's anchor
            ts = _teacher(s, run, store) if cfg.ranking.teacher else None
            _loop(s, run, emit, state, progress, ts)
        return _finish(s, run, emit, state, start)


def _teacher(s: BiSetup, run: Run, store: RunStore) -> BD.TeacherScores:
    """The teacher's scores of every training context's candidates (cached in the run folder), and
    a note of them in run.json's data summary."""
    ts = BD.teacher_scores(s, run.dir, store)
    cache = run.dir / BD.CACHE
    run.update(data={**run.info.get("data", {}), "teacher": {
        "run": ts.teacher.removeprefix("run:"), "loss": s.cfg.ranking.distill_loss,
        "weight": s.cfg.ranking.distill_weight, "scored_pairs": int(len(ts.cands)),
        "mean_candidates": float(len(ts.cands) / max(len(ts), 1)),
        "cache_bytes": cache.stat().st_size if cache.exists() else 0}})
    return ts


def _frozen_candidates(s: BiSetup) -> torch.Tensor | None:
    """`ranking.freeze_candidates`: the candidate encoder stops training and every training candidate
    is encoded once, (P, H) by position, reused by every step of every epoch."""
    if not s.cfg.ranking.freeze_candidates:
        return None
    for p in s.model.cand_encoder.parameters():
        p.requires_grad_(False)
    segs, tc = _cand_segments(s), s.cfg.train
    if s.data.candidates == "list":
        pos = np.arange(len(segs))
    else:   # only the entries of the training domains can appear in a training batch
        pos = np.unique(np.concatenate([s.domain_pos[d] for d in sorted(s.domain_pos)]))
    vecs = embed(s.model, s.tokenizer, [segs.ids[p] for p in pos], "cand", s.device, tc.precision,
                 tc.eval_batch_size)
    out = torch.zeros(len(segs), vecs.shape[1])
    out[torch.from_numpy(pos)] = torch.from_numpy(vecs)
    s.model.train()
    return out.to(s.device)


def _forward(s: BiSetup, b: TrainBatch, frozen: torch.Tensor | None) -> dict:
    """{"loss", "logits", "ce", "distill"}: in-batch cross-entropy over the batch's candidates, mixed
    with the distillation loss over each context's scored candidates when there is a teacher."""
    rc, dev = s.cfg.ranking, s.device
    ctx = {k: v.to(dev) for k, v in b.ctx.items()}
    labels = b.labels.to(dev)
    if frozen is None:
        cand = {k: v.to(dev) for k, v in single_batch(s.tokenizer, [_cand_segments(s).ids[p]
                                                                     for p in b.cand_pos]).items()}
        out = s.model(ctx, cand, labels)
    else:
        logits = s.model.scores(s.model.embed_contexts(**ctx), frozen[torch.tensor(b.cand_pos, device=dev)])
        out = {"logits": logits, "loss": RM.rank_loss(logits, labels, None, rc.loss, rc.margin, rc.scale)}
    out["ce"] = out["loss"]
    if b.distill is not None:
        cols, mask, teacher, gold = (x.to(dev) for x in b.distill)
        out["distill"] = BD.distill_loss(out["logits"].float().gather(1, cols), teacher, mask, gold, rc)
        out["loss"] = (1 - rc.distill_weight) * out["ce"] + rc.distill_weight * out["distill"]
    return out


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


def _loop(s: BiSetup, run: Run, emit, state: dict, progress: bool, ts: BD.TeacherScores | None = None) -> None:
    tc = s.cfg.train
    n = len(s.data.train)
    steps_per_epoch = math.ceil(n / tc.batch_size)
    total = steps_per_epoch * tc.epochs if not tc.max_steps else min(steps_per_epoch * tc.epochs, tc.max_steps)
    frozen = _frozen_candidates(s)
    opt = make_optimizer(s.model, tc)
    sched = make_scheduler(opt, tc, total)
    s.model.train()
    with ProgressBar(progress, total, 0, "bi-encoder") as bar:
        for epoch in range(tc.epochs):
            rng = np.random.default_rng(tc.seed * 100003 + epoch)
            rng.permutation(n)    # the draw the batch order used to take: negatives as before bucketing
            tr, parts = Running(), {"ce_loss": 0.0, "distill_loss": 0.0}
            for idx in epoch_batches(s, epoch):
                b = _train_step_batch(s, idx, rng, ts)
                with autocast(s.device, tc.precision):
                    out = _forward(s, b, frozen)
                out["loss"].backward()
                apply_step(s.model, opt, sched, tc.max_grad_norm)
                state["step"] += 1
                parts["ce_loss"] += out["ce"].item() * len(idx)
                if "distill" in out:
                    parts["distill_loss"] += out["distill"].item() * len(idx)
                bar.advance(epoch, tr.add(out, b.labels))
                if tc.max_steps and state["step"] >= tc.max_steps:
                    break
            extra = {k: v / max(tr.seen, 1) for k, v in parts.items() if ts is not None}
            emit({"split": "train", "step": state["step"], "epoch": epoch + 1, "metrics": {**tr.metrics(sched),
                                                                                            **extra}})
            _validate(s, run, emit, state, epoch + 1.0, opt, sched)
            if tc.max_steps and state["step"] >= tc.max_steps:
                break


def start_vs_tuned(s: BiSetup, start: dict) -> tuple[dict, dict | None]:
    """The starting weights scored on validation and test beside the fine-tuned ones, and with
    `ranking.wise` the WiSE-FT weight: (1 - w) * start + w * tuned with the best validation accuracy
    (then MRR; ties to the larger w), the model left there. Returns ({split: starting-weight scores},
    {"weight", "curve", "validation": its scores} or None without WiSE-FT)."""
    tuned = fusion.snapshot(s.model)
    fusion.interpolate(s.model, start, tuned, 0.0)
    at_start = {split: evaluate(s, split) for split in ("validation", "test")}
    grid = fusion.wise_grid(s.cfg.ranking.wise)
    if not grid:
        fusion.interpolate(s.model, start, tuned, 1.0)
        return at_start, None

    def at(w):
        v = at_start["validation"] if w == 0.0 else evaluate(s, "validation")
        return {"accuracy": v["accuracy"], "mrr": v["mrr"]}, v
    w, val, curve = fusion.wise_search(s.model, start, tuned, grid, at)
    return at_start, {"weight": w, "curve": curve, "validation": val}


def zero_shot_scores(cfg: C.ExperimentConfig, store_root) -> dict[str, dict]:
    """The zero-shot baseline on the same contexts (the pretrained encoder, no markers, mean pooling,
    cosine): a run's starting weights differ from it once markers or mention pooling are on."""
    z = setup(C.replace(cfg, **{"ranking.mode": "zero-shot"}), store_root)
    out = {split: evaluate(z, split) for split in ("validation", "test")}
    del z
    return out


def _baseline_metrics(prefix: str, base: dict) -> dict:
    return {f"{prefix}_accuracy": base["accuracy"], f"{prefix}_mrr": base["mrr"],
            f"domain_mean/{prefix}_accuracy": base["domain_mean"]["accuracy"],
            **{f"{prefix}_accuracy/{d}": p["accuracy"] for d, p in base["per_domain"].items()}}


def _finish(s: BiSetup, run: Run, emit, state: dict, start: dict | None = None) -> Run:
    if state["best"] is not None:
        checkpoint.load_weights(run.dir / "checkpoints" / f"step-{state['best']['step']}", s.model)
    at_start, chosen, zero, known = {}, {}, {}, {}
    if start is not None:
        if s.cfg.model.init == "pretrained":
            zero = zero_shot_scores(s.cfg, run.store.root)
        at_start, wise = start_vs_tuned(s, start)
        if wise is not None:      # the chosen weight's validation scores are already known
            known["validation"] = wise.pop("validation")
            chosen["wise"] = wise
    results = {}
    for split in ("validation", "test"):
        t0 = time.perf_counter()
        scores = known.get(split) or evaluate(s, split)
        results[split] = scores
        extra = {"eval_seconds": time.perf_counter() - t0}
        if split in at_start:      # fine-tuned vs starting weights and zero-shot, overall and per domain
            extra |= _baseline_metrics("start", at_start[split])
            if split in zero:
                extra |= _baseline_metrics("zero_shot", zero[split])
            if "wise" in chosen:
                extra["wise"] = chosen["wise"]["weight"]
        if split == "validation" and state["best"] is None:   # zero-shot: one evaluation, no training
            emit({"split": "validation", "step": 0, "epoch": 0, "metrics": flat_metrics(scores)})
        emit({"split": "final_validation" if split == "validation" else "test",
              "step": state["best"]["step"] if state["best"] else 0,
              "epoch": state["best"]["epoch"] if state["best"] else 0,
              "metrics": flat_metrics(scores, extra),
              "detail": {"per_domain": scores["per_domain"]}})
    if s.cfg.ranking.mode == "bi":
        RM.save(s.model, s.tokenizer, run.dir / "model", {"mode": "bi", "ranking": C.to_dict(s.cfg.ranking),
                                                          **({"wise": chosen["wise"]["weight"]} if chosen else {})})
    run.update(status="completed", finished=now(), test_accuracy=results["test"]["accuracy"], message="", **chosen)
    space.lean_completed(run.dir)
    return run
