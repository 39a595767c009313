"""The fine-tuning recipe: setup -> loop (train, evaluate, checkpoint) -> test the best -> save.

One straight procedure, no Trainer class. Every evaluation is followed by a checkpoint, so the
best model is always on disk; a killed run resumes from its newest checkpoint with the same
batch order, RNG state and running train metrics."""

from __future__ import annotations

import math
import time

import torch

from encoderlab import config as C
from encoderlab import machine
from encoderlab import tasks as T
from encoderlab.encode.long import for_training
from encoderlab.encode.text import train_batches
from encoderlab.errors import StoreError
from encoderlab.faults import fault
from encoderlab.store import space
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train import checkpoint, distributed, tracking
from encoderlab.train.classify import Setup, data_summary, setup
from encoderlab.train.loop import (Callback, Clock, Diverged, ProgressBar, StepTimer, autocast, emitter, evaluate,
                                   graceful_stop, reopen, write_predictions)
from encoderlab.train.optim import apply_step, make_optimizer, make_scheduler


class _Stop(Exception):
    pass


def fit(cfg: C.ExperimentConfig, store: RunStore, *, resume: Run | None = None,
        callback: Callback | None = None, progress: bool = True) -> Run:
    """Train (or continue) one run; returns it completed, or raises after marking it."""
    clock = Clock()
    world = distributed.init()
    if resume is not None:
        if world.size > 1:
            raise StoreError("resume a run in one process (encoderlab resume), not under torch.distributed")
        cfg = resume.config()
    s = setup(cfg, store.root, resume.labels() if resume else None)
    net = world.wrap(s.model)       # what the training step calls (DDP when several processes)
    world.fork_rng(cfg.train.seed)
    tc = cfg.train
    metric = T.resolve_metric(tc.metric, s.data.task)     # "auto": the task's own (accuracy, micro_f1, spearman)
    opt = make_optimizer(s.model, tc)
    batches_per_epoch = math.ceil(len(s.enc["train"]) / tc.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    total = steps_per_epoch * tc.epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    sched = make_scheduler(opt, tc, total)

    state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "bad_evals": 0,
             "train": {"loss": 0.0, "correct": 0, "seen": 0, "tokens": 0, "seconds": 0.0}}
    if not world.lead:
        run = distributed.Follower()
    elif resume is None:
        summary = data_summary(s)
        run = store.create(cfg, s.data.label_names, task=s.data.task, data=summary,
                           **machine.run_fields(tc.precision, tc.threads, s.device),
                           model_source=s.model_source, **({"processes": world.size} if world.size > 1 else {}))
    else:
        run = resume
        state = reopen(run, s.model, opt, sched, state)
    compiled, why = machine.compile_choice(tc.compile, total - state["step"], s.device, world.size)
    if compiled:
        from torch import _dynamo
        # a graph that fails to compile (no working C++ toolchain, an unsupported op) runs eagerly
        # instead of failing the run
        _dynamo.config.suppress_errors = True
        net = torch.compile(net, dynamic=True)   # bucketed batches vary in length: one dynamic graph
    if world.lead:
        run.update(compiled=compiled, compile_reason=why)
    track = tracking.Trackers(cfg, run, store.root) if cfg.tracking and world.lead else None
    emit = emitter(run, callback, track)
    if world.lead and resume is None:       # the data summary, for the caller to print before training
        cov = (summary.get("vocabulary") or {}).get("splits", {}).get("train", {})
        emit({"split": "data", "step": 0, "epoch": 0.0, "detail": summary,
              "metrics": {k: cov[k] for k in ("unk_share", "all_unk_share") if k in cov}})
    ckpt_dir = run.dir / "checkpoints" if world.lead else None
    best_val: dict = {}     # the best evaluation's scores and logits: _finish need not score it again

    def save(keep: set[str] | None) -> None:
        """Checkpoint (rank 0 only), then prune all but `keep` and the newest (None: no pruning)."""
        if world.lead:
            with clock("checkpoint"):
                checkpoint.save(ckpt_dir, s.model, opt, sched, state)
                if keep is not None:
                    checkpoint.prune(ckpt_dir, tc.keep_checkpoints, keep)

    def eval_and_save(epoch_float: float) -> bool:
        """Validate, checkpoint, track the best; True when early stopping says stop."""
        with clock("eval"):
            scores, logits = evaluate(s.model, s.enc["validation"], s.data.label_names, tc, s.device,
                                      task=s.task, labels=s.data.validation.labels)
        s.model.train()
        metrics, detail = s.task.event(scores)
        emit({"split": "validation", "step": state["step"], "epoch": epoch_float, "metrics": metrics, "detail": detail})
        value = scores[metric]
        if T.better(metric, value, None if state["best"] is None else state["best"]["value"]):
            state["best"] = {"metric": metric, "value": value, "step": state["step"], "epoch": epoch_float}
            state["bad_evals"] = 0
            best_val.update(step=state["step"], scores=scores, logits=logits)
        else:
            state["bad_evals"] += 1
        save({f"step-{state['best']['step']}"})
        run.update(steps_done=state["step"], epochs_done=int(epoch_float),
                   best_metric=metric, best_value=state["best"]["value"])
        return bool(tc.early_stopping) and state["bad_evals"] >= tc.early_stopping

    bar = ProgressBar(progress and world.lead, total, state["step"])
    timer = StepTimer(clock)
    s.model.train()
    clock.add("setup", clock.since_start())
    try:
        with store.running(run, state), graceful_stop() as stop_asked, bar:
            try:
                for epoch in range(state["epoch"], tc.epochs):
                    # encode.long = "chunks": this epoch's window of each document, drawn from (seed, epoch)
                    # so a resumed epoch sees the same windows in the same batches
                    train = for_training(s.enc["train"], tc.seed * 100003 + epoch)
                    batches = train_batches(train.lengths, tc.batch_size,
                                            seed=tc.seed * 100003 + epoch, bucket=tc.bucket)
                    tr = state["train"]
                    timer.start()
                    for b in range(state["batch"], len(batches), tc.grad_accum):
                        group = batches[b:b + tc.grad_accum]
                        n_ex = sum(len(g) for g in group)
                        for idx in group:
                            idx, n = world.part(idx)    # this process's slice (all of it in one process)
                            batch = {k: v.to(s.device) for k, v in train.batch(idx).items()}
                            with autocast(s.device, tc.precision):
                                out = net(**batch)
                            # weight each micro-batch by its share of the step's examples (x processes:
                            # DDP averages the gradients of the slices)
                            loss = out["loss"].item()
                            if not math.isfinite(loss):
                                raise Diverged(state["step"] + 1, loss)
                            (out["loss"] * (n / n_ex * world.size)).backward()
                            if n:
                                tr["loss"] += loss * n
                                tr["correct"] += s.task.running_hits(out["logits"], batch["labels"])
                                tr["seen"] += n
                                tr["tokens"] += int(train.lengths[idx].sum())
                        fault("step")
                        apply_step(s.model, opt, sched, tc.max_grad_norm, tr)
                        state["step"] += 1
                        state["batch"] = b + len(group)
                        # ~20 points of the running train loss per epoch: lets diagnostics see a loss
                        # that is flat from the start or spikes inside one epoch
                        if state["step"] % max(1, steps_per_epoch // 20) == 0:
                            world.fold(tr)
                            tr.setdefault("curve", []).append([state["step"], tr["loss"] / max(tr["seen"], 1)])
                        bar.advance(epoch, tr["loss"] / max(tr["seen"], 1))
                        if stop_asked["n"]:
                            timer.pause(tr)
                            save(None)
                            raise KeyboardInterrupt
                        done = tc.max_steps and state["step"] >= tc.max_steps
                        if tc.eval_every_steps and state["step"] % tc.eval_every_steps == 0 and not done \
                                and state["batch"] < len(batches):
                            with timer.paused(tr):
                                stop = eval_and_save(epoch + state["batch"] / len(batches))
                            if stop:
                                raise _Stop
                        elif tc.save_every_steps and state["step"] % tc.save_every_steps == 0 and not done:
                            with timer.paused(tr):
                                save({f"step-{state['best']['step']}"} if state["best"] else set())
                        if done:
                            break
                    timer.pause(tr)
                    world.fold(tr)
                    frac = state["batch"] / len(batches)
                    emit({"split": "train", "step": state["step"], "epoch": epoch + frac,
                          "metrics": {"loss": tr["loss"] / max(tr["seen"], 1),
                                      **({T.RUNNING_METRIC[s.task.kind]: tr["correct"] / max(tr["seen"], 1)}
                                         if s.task.kind in T.RUNNING_METRIC else {}),
                                      "lr": sched.get_last_lr()[0], "seconds": tr["seconds"],
                                      "tokens_per_s": tr["tokens"] / max(tr["seconds"], 1e-9),
                                      **({"grad_norm_max": tr["grad_norm_max"]} if "grad_norm_max" in tr else {})},
                          "detail": {"loss_curve": tr.get("curve", [])}})
                    state.update(epoch=epoch + 1 if frac >= 1 else epoch, batch=0 if frac >= 1 else state["batch"],
                                 train={"loss": 0.0, "correct": 0, "seen": 0, "tokens": 0, "seconds": 0.0})
                    stop = eval_and_save(epoch + frac)
                    if stop or (tc.max_steps and state["step"] >= tc.max_steps):
                        break
            except _Stop:
                pass
            except Diverged as e:     # what diagnostics read: the step and the loss that went non-finite
                emit({"split": "train", "step": e.step,
                      "epoch": state["epoch"] + state["batch"] / max(batches_per_epoch, 1),
                      "metrics": {}, "detail": {"nonfinite": True, "loss": str(e.loss)}})
                raise
            if world.lead:
                with clock("finish"):
                    run = _finish(run, s, state, emit, best_val, clock)
                run.update(timing=clock.merged(run.info.get("timing")))
    finally:
        if track and run.status not in ("running", "completed"):     # stopped: close the trackers' runs as such
            track.finish(run, run.status)
    world.close()
    if track:
        track.finish(run, "completed")
    return run


def _finish(run: Run, s: Setup, state: dict, emit, best_val: dict | None = None, clock: "Clock | None" = None) -> Run:
    """Score the best checkpoint on validation and test, save predictions and the model, then drop
    what only a resume needs. The best checkpoint is reloaded only when it is not the model in memory,
    and its validation pass is reused when this process ran it."""
    tc = s.cfg.train
    best = run.dir / "checkpoints" / f"step-{state['best']['step']}"
    if state["best"]["step"] != state["step"] or not best_val:
        checkpoint.load_weights(best, s.model)
    fault("finish")
    pred_dir = run.dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    results = {}
    for split in ("validation", "test"):
        if split == "validation" and best_val and best_val.get("step") == state["best"]["step"]:
            scores, logits = best_val["scores"], best_val["logits"]
        else:
            t = time.perf_counter()
            scores, logits = evaluate(s.model, s.enc[split], s.data.label_names, tc, s.device,
                                      task=s.task, labels=getattr(s.data, split).labels)
            if clock:     # the final passes count as evaluation, not as the rest of finishing
                clock.add(split if split == "test" else "eval", time.perf_counter() - t)
                clock.add("finish", -(time.perf_counter() - t))
        tuned = {}
        if split == "validation" and s.task.kind == "multilabel":
            # thresholds tuned on validation, kept with the model; the test pass below uses them
            tuned = s.task.tune(logits, s.data.validation.labels)
            scores = s.task.scores(logits, s.data.validation.labels, scores["loss"])
        results[split] = scores
        metrics, detail = s.task.event(scores)
        emit({"split": f"final_{split}" if split == "validation" else "test", "step": state["best"]["step"],
              "epoch": state["best"]["epoch"], "metrics": metrics,
              "detail": {**detail, "checkpoint": best.name, **({"thresholds": tuned} if tuned else {})}})
        write_predictions(pred_dir / f"{split}.csv", getattr(s.data, split), logits, s.data.label_names, s.task)
    s.save(run.dir / "model",
           {"labels": s.data.label_names, "task": s.data.task, "head": C.to_dict(s.cfg.model.head),
            "max_length": s.cfg.encode.max_length, "truncation": s.cfg.encode.truncation,
            "long": s.cfg.encode.long, "stride": s.cfg.encode.stride, "pool": s.cfg.encode.pool,
            "best_checkpoint": best.name})
    test = results["test"]
    run.update(status="completed", finished=now(), test_accuracy=test.get("accuracy", test.get("subset_accuracy")),
               test_macro_f1=test.get("macro_f1"), test_scores=s.task.event(test)[0], message="")
    space.lean_completed(run.dir)
    return run


