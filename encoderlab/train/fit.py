"""The fine-tuning recipe: setup -> loop (train, evaluate, checkpoint) -> test the best -> save.

One straight procedure, no Trainer class. Every evaluation is followed by a checkpoint, so the
best model is always on disk; a killed run resumes from its newest checkpoint with the same
batch order, RNG state and running train metrics."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from encoderlab import config as C
from encoderlab import machine
from encoderlab import metrics as M
from encoderlab.data.dataset import TaskData, load_data
from encoderlab.encode import series
from encoderlab.encode.text import Encoded, encode_split, eval_batches, padding_waste, train_batches
from encoderlab.errors import EncoderlabError, StoreError
from encoderlab.faults import fault
from encoderlab.models import classifier
from encoderlab.store import atomic, space
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train import checkpoint, distributed, tracking
from encoderlab.train.optim import make_optimizer, make_scheduler

Callback = Callable[[dict], None]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StoreError("train.device = 'cuda' but no CUDA device is available")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16 autocast when `precision` (auto / bf16 / fp32) resolves to bf16 on this machine."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=machine.resolve(precision, device).name == "bf16")


@torch.inference_mode()
def predict_logits(model, enc: Encoded, batch_size: int, device, precision: str,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, num_labels) float32 logits in the original example order. `enc` is any task's encoded
    split: `lengths`, `labels` and `batch(idx)` -> model inputs."""
    model.eval()
    out = np.empty((len(enc), model.head.net[-1].out_features), dtype=np.float32)
    for idx in eval_batches(enc.lengths, batch_size):
        batch = enc.batch(idx)
        batch.pop("labels")
        with autocast(device, precision):
            logits = model(**{k: v.to(device) for k, v in batch.items()})["logits"]
        out[idx] = logits.float().cpu().numpy()
        fault("eval")
        if progress:
            progress(len(idx))
    return out


def evaluate(model, enc: Encoded, names: list[str], cfg: C.TrainConfig, device,
             weights: torch.Tensor | None = None) -> tuple[dict, np.ndarray]:
    """Loss, accuracy, macro-F1 (and per-class detail) of a labelled split; also the logits."""
    logits = predict_logits(model, enc, cfg.eval_batch_size, device, cfg.precision)
    labels = torch.from_numpy(enc.labels)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), labels,
                                             weight=None if weights is None else weights.cpu()).item()
    scores = M.classification(enc.labels, logits.argmax(1), names)
    return {"loss": loss, **scores}, logits


@dataclass
class Setup:
    """Everything a run needs in memory, built the same way for a new run and a resumed one."""
    cfg: C.ExperimentConfig
    data: TaskData
    model: torch.nn.Module
    tokenizer: object
    enc: dict[str, Encoded]
    device: torch.device
    class_weights: torch.Tensor | None
    model_source: str = ""        # the folder model.path resolved to (run:NAME moves on; this not)
    save: Callable[[Path, dict], None] | None = None   # (folder, meta) -> the final model on disk


def class_weights(cfg: C.TrainConfig, labels: np.ndarray, num_labels: int) -> torch.Tensor | None:
    if cfg.class_weights != "balanced":
        return None
    counts = np.bincount(labels, minlength=num_labels).astype(np.float32)
    return torch.from_numpy(len(labels) / (num_labels * np.maximum(counts, 1)))


def setup(cfg: C.ExperimentConfig, store_root=None, label_names: list[str] | None = None) -> Setup:
    machine.apply_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    data, _ = load_data(cfg.data)
    if label_names is not None and label_names != data.label_names:
        raise StoreError("the data's labels changed since this run started; cannot resume it")
    weights = class_weights(cfg.train, data.train.labels, len(data.label_names))
    device = pick_device(cfg.train.device)
    model, tokenizer, folder = classifier.build(cfg.model, len(data.label_names), class_weights=weights,
                                                label_smoothing=cfg.train.label_smoothing, store_root=store_root)
    state = None
    if data.task == "sequence":
        state = series.fit(cfg.series, data.train)
        tokenizer = series.extend(state, tokenizer, model, cfg.series.vocabulary, cfg.model.init)
        enc = {s: series.encode(state, getattr(data, s), tokenizer, cfg.encode.max_length)
               for s in ("train", "validation", "test")}
    else:
        enc = {s: encode_split(tokenizer, getattr(data, s), cfg.encode.max_length, cfg.encode.truncation)
               for s in ("train", "validation", "test")}
    model.to(device)
    source = cfg.model.path if cfg.model.path.startswith(("arch:", "builtin:")) else str(Path(folder).resolve())
    extra = {"series": state} if state else {}     # the fitted input scheme travels with the model
    return Setup(cfg, data, model, tokenizer, enc, device, weights, source,
                 lambda folder, meta: classifier.save(model, tokenizer, folder, {**meta, **extra}))


def _data_summary(s: Setup) -> dict:
    d = s.data
    top, base = d.majority_baseline("validation")
    waste = padding_waste(s.enc["train"].lengths,
                          train_batches(s.enc["train"].lengths, s.cfg.train.batch_size, 0, s.cfg.train.bucket))
    return {"task": d.task, "num_labels": len(d.label_names),
            "sizes": {k: len(getattr(d, k)) for k in ("train", "validation", "test")},
            "majority_class": top, "majority_baseline_validation": base,
            "majority_baseline_test": d.majority_baseline("test")[1],
            "train_class_balance": d.class_balance("train"),
            "mean_tokens": float(s.enc["train"].lengths.mean()),
            "truncated_share": {k: e.at_limit / max(len(e), 1) for k, e in s.enc.items()},
            "train_padding_waste": waste,
            "parameters": sum(p.numel() for p in s.model.parameters())}


class _Stop(Exception):
    pass


class _Diverged(EncoderlabError):
    """The training loss became NaN/inf: continuing would only train on garbage."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"training loss became {loss} at step {step}; the learning rate is probably "
                         "too high (lower train.lr, add warmup, keep train.max_grad_norm > 0)")
        self.step, self.loss = step, loss


@contextlib.contextmanager
def graceful_stop():
    """SIGTERM and a first Ctrl-C ask the loop to stop at the next step boundary, where it saves a
    checkpoint and marks the run interrupted (so a resume loses no step); a second Ctrl-C stops at
    once. Yields the request counter the loop polls."""
    asked = {"n": 0}

    def handler(signum, frame):
        asked["n"] += 1
        if signum == signal.SIGINT and asked["n"] > 1:
            raise KeyboardInterrupt

    try:
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: no handlers, Ctrl-C behaves as usual
        yield asked
        return
    try:
        yield asked
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """`kill` (SIGTERM) stops a run the same clean way Ctrl-C does."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


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
        run = store.create(cfg, s.data.label_names, task=s.data.task, data=_data_summary(s),
                           **machine.run_fields(tc.precision, tc.threads, s.device),
                           model_source=s.model_source, **({"processes": world.size} if world.size > 1 else {}))
    else:
        run = resume
        state = reopen(run, s.model, opt, sched, state)
    track = tracking.Trackers(cfg, run, store.root) if cfg.tracking and world.lead else None
    emit = emitter(run, callback, track)
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
                                      s.class_weights)
        s.model.train()
        emit({"split": "validation", "step": state["step"], "epoch": epoch_float,
              "metrics": {k: scores[k] for k in ("loss", "accuracy", "macro_f1")},
              "detail": {"per_class": scores["per_class"], "predicted_share": scores["predicted_share"]}})
        value = scores[tc.metric]
        better = state["best"] is None or (value < state["best"]["value"] if tc.metric == "loss"
                                           else value > state["best"]["value"])
        if better:
            state["best"] = {"metric": tc.metric, "value": value, "step": state["step"], "epoch": epoch_float}
            state["bad_evals"] = 0
            best_val.update(step=state["step"], scores=scores, logits=logits)
        else:
            state["bad_evals"] += 1
        save({f"step-{state['best']['step']}"})
        run.update(steps_done=state["step"], epochs_done=int(epoch_float),
                   best_metric=tc.metric, best_value=state["best"]["value"])
        return bool(tc.early_stopping) and state["bad_evals"] >= tc.early_stopping

    bar = ProgressBar(progress and world.lead, total, state["step"])
    s.model.train()
    clock.add("setup", clock.since_start())
    try:
        with graceful_stop() as stop_asked, bar:
            for epoch in range(state["epoch"], tc.epochs):
                batches = train_batches(s.enc["train"].lengths, tc.batch_size,
                                        seed=tc.seed * 100003 + epoch, bucket=tc.bucket)
                t0 = time.perf_counter()
                tr = state["train"]
                for b in range(state["batch"], len(batches), tc.grad_accum):
                    group = batches[b:b + tc.grad_accum]
                    n_ex = sum(len(g) for g in group)
                    for idx in group:
                        idx, n = world.part(idx)    # this process's slice (all of it in one process)
                        batch = {k: v.to(s.device) for k, v in s.enc["train"].batch(idx).items()}
                        with autocast(s.device, tc.precision):
                            out = net(**batch)
                        # weight each micro-batch by its share of the step's examples (x processes:
                        # DDP averages the gradients of the slices)
                        loss = out["loss"].item()
                        if not math.isfinite(loss):
                            raise _Diverged(state["step"] + 1, loss)
                        (out["loss"] * (n / n_ex * world.size)).backward()
                        if n:
                            tr["loss"] += loss * n
                            tr["correct"] += int((out["logits"].argmax(1) == batch["labels"]).sum())
                            tr["seen"] += n
                            tr["tokens"] += int(s.enc["train"].lengths[idx].sum())
                    fault("step")
                    if tc.max_grad_norm:
                        norm = float(torch.nn.utils.clip_grad_norm_(s.model.parameters(), tc.max_grad_norm))
                        tr["grad_norm_max"] = max(tr.get("grad_norm_max", 0.0), norm)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    state["step"] += 1
                    state["batch"] = b + len(group)
                    # ~20 points of the running train loss per epoch: lets diagnostics see a loss
                    # that is flat from the start or spikes inside one epoch
                    if state["step"] % max(1, steps_per_epoch // 20) == 0:
                        world.fold(tr)
                        tr.setdefault("curve", []).append([state["step"], tr["loss"] / max(tr["seen"], 1)])
                    bar.advance(epoch, tr["loss"] / max(tr["seen"], 1))
                    if stop_asked["n"]:
                        tr["seconds"] += clock.lap("train", t0)
                        save(None)
                        raise KeyboardInterrupt
                    done = tc.max_steps and state["step"] >= tc.max_steps
                    if tc.eval_every_steps and state["step"] % tc.eval_every_steps == 0 and not done \
                            and state["batch"] < len(batches):
                        tr["seconds"] += clock.lap("train", t0)
                        t0 = time.perf_counter()
                        if eval_and_save(epoch + state["batch"] / len(batches)):
                            raise _Stop
                    elif tc.save_every_steps and state["step"] % tc.save_every_steps == 0 and not done:
                        save({f"step-{state['best']['step']}"} if state["best"] else set())
                    if done:
                        break
                tr["seconds"] += clock.lap("train", t0)
                world.fold(tr)
                frac = state["batch"] / len(batches)
                emit({"split": "train", "step": state["step"], "epoch": epoch + frac,
                      "metrics": {"loss": tr["loss"] / max(tr["seen"], 1),
                                  "accuracy": tr["correct"] / max(tr["seen"], 1),
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
    except _Diverged as e:
        emit({"split": "train", "step": e.step, "epoch": state["epoch"] + state["batch"] / max(batches_per_epoch, 1),
              "metrics": {}, "detail": {"nonfinite": True, "loss": str(e.loss)}})
        run.update(status="failed", message=str(e))
        raise
    except KeyboardInterrupt:
        run.update(status="interrupted", message=f"stopped at step {state['step']}")
        raise
    except BaseException as e:
        run.update(status="failed", message=f"{type(e).__name__}: {e}"[:500])
        raise
    finally:
        if track and run.status != "running":     # stopped: close the trackers' runs as such
            track.finish(run, run.status)
    if not world.lead:
        world.close()
        return run
    with clock("finish"):
        run = _finish(run, s, state, emit, best_val, clock)
    run.update(timing=clock.merged(run.info.get("timing")))
    world.close()
    if track:
        track.finish(run, "completed")
    return run


def reopen(run: Run, model, opt, sched, state: dict) -> dict:
    """Mark an interrupted run as running again; its newest checkpoint's loop state (weights,
    optimizer, scheduler and RNG restored), or `state` when it has none yet."""
    if run.status == "completed":
        raise StoreError(f"run {run.id} is already completed")
    if run.checkpoints:
        state = checkpoint.load(run.checkpoints[-1], model, opt, sched)
    run.update(status="running", pid=os.getpid(), message=f"resumed at step {state['step']}")
    return state


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
            scores, logits = evaluate(s.model, s.enc[split], s.data.label_names, tc, s.device, s.class_weights)
            if clock:     # the final passes count as evaluation, not as the rest of finishing
                clock.add(split if split == "test" else "eval", time.perf_counter() - t)
                clock.add("finish", -(time.perf_counter() - t))
        results[split] = scores
        emit({"split": f"final_{split}" if split == "validation" else "test", "step": state["best"]["step"],
              "epoch": state["best"]["epoch"],
              "metrics": {k: scores[k] for k in ("loss", "accuracy", "macro_f1")},
              "detail": {"per_class": scores["per_class"], "predicted_share": scores["predicted_share"],
                         "checkpoint": best.name}})
        _write_predictions(pred_dir / f"{split}.csv", getattr(s.data, split), logits, s.data.label_names)
    s.save(run.dir / "model",
           {"labels": s.data.label_names, "task": s.data.task, "head": C.to_dict(s.cfg.model.head),
            "max_length": s.cfg.encode.max_length, "truncation": s.cfg.encode.truncation,
            "best_checkpoint": best.name})
    run.update(status="completed", finished=now(), test_accuracy=results["test"]["accuracy"],
               test_macro_f1=results["test"]["macro_f1"], message="")
    space.lean_completed(run.dir)
    return run


def _write_predictions(path: Path, split, logits: np.ndarray, names: list[str]) -> None:
    import pandas as pd
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    df = pd.DataFrame({"label": [names[i] if i >= 0 else "" for i in split.labels],
                       "predicted": [names[i] for i in probs.argmax(1)]})
    for j, n in enumerate(names):
        df[f"p_{n}"] = probs[:, j].round(6)
    atomic.write_text(path, df.to_csv(index=False))


def emitter(run: Run, callback: Callback | None, track: tracking.Trackers | None = None) -> Callback:
    def emit(event: dict) -> None:
        run.log(event)
        if track:
            track.log(event)
        if callback:
            callback(event)
    return emit


class Clock:
    """Where a run's wall time goes: setup (data, tokens, model), train, eval, checkpoint, finish,
    and the process start-up before the run (imports), counted for the process's first run only."""
    _first = True

    def __init__(self):
        self.t0 = time.perf_counter()
        self.parts = {"startup": _process_age() if Clock._first else 0.0}
        Clock._first = False

    def lap(self, part: str, t0: float) -> float:
        """Seconds since `t0`, added to `part`."""
        dt = time.perf_counter() - t0
        self.add(part, dt)
        return dt

    def since_start(self) -> float:
        return time.perf_counter() - self.t0

    def add(self, part: str, seconds: float) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, part: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - t)

    def merged(self, before: dict | None) -> dict:
        """This process's parts added to those of earlier processes of the same run (a resume)."""
        out = dict(before or {})
        for k, v in {**self.parts, "wall": self.parts.get("startup", 0.0) + self.since_start()}.items():
            out[k] = round(out.get(k, 0.0) + v, 3)
        return out


def _process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class ProgressBar:
    """A rich progress bar over optimizer steps (silent when disabled or not a terminal)."""

    def __init__(self, enabled: bool, total: int, start: int, label: str = "train"):
        self.enabled, self.total, self.start, self.label = enabled, total, start, label
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self.bar = Progress(TextColumn(f"[bold]{self.label}[/] epoch {{task.fields[epoch]}}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                                TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.start, epoch=1,
                                          loss=float("nan"))
        return self

    def advance(self, epoch: int, loss: float) -> None:
        if self.bar:
            self.bar.update(self.task, advance=1, epoch=epoch + 1, loss=loss)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)
