"""What the recipes share: device and precision, prediction and evaluation of a classifier,
prediction files, events, the progress bar, where time goes, graceful stop and reopening a run.

Recipes (fit, pretrain, distill, lrfind, the bi-/cross-encoder) import these helpers and never each
other; nothing here knows a recipe."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from encoderlab import machine
from encoderlab import tasks as T
from encoderlab import config as C
from encoderlab.encode.long import Windows
from encoderlab.encode.text import Encoded, eval_batches
from encoderlab.errors import EncoderlabError, StoreError
from encoderlab.faults import fault
from encoderlab.store import atomic
from encoderlab.train import checkpoint, tracking

if TYPE_CHECKING:
    from encoderlab.store.runs import Run

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
    split: `lengths`, `labels` and `batch(idx)` -> model inputs; or `long.Windows`, whose window
    logits are pooled into one row per document."""
    model.eval()
    docs = enc if isinstance(enc, Windows) else None
    enc = docs.win if docs else enc       # encode.long = "chunks": score every window, pool per document
    out = np.empty((len(enc), model.head.net[-1].out_features), dtype=np.float32)
    for idx in eval_batches(enc.lengths, batch_size):
        batch = enc.batch(idx)
        batch.pop("labels")
        with autocast(device, precision):
            logits = model(**{k: v.to(device) for k, v in batch.items()})["logits"]
        out[idx] = logits.float().cpu().numpy()
        fault("eval")
        if progress:        # in documents (windows count as their share of the split's documents)
            progress(len(idx) * len(docs) / len(enc) if docs else len(idx))
    return docs.pool_logits(out) if docs else out


def evaluate(model, enc: Encoded, names: list[str], cfg: C.TrainConfig, device,
             weights: torch.Tensor | None = None, task: T.Task | None = None,
             labels: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Loss and the task's scores (classification: accuracy, macro-F1, per-class detail) of a
    labelled split; also the logits. The loss compares with `enc.labels` (the training scale);
    the scores with `labels`, the split's labels as read (default: the same)."""
    task = task or T.Task("classification", names, weights=weights)
    logits = predict_logits(model, enc, cfg.eval_batch_size, device, cfg.precision)
    loss = task.loss(torch.from_numpy(logits), torch.from_numpy(enc.labels), smooth=False).item()
    return task.scores(logits, enc.labels if labels is None else labels, loss), logits


class Diverged(EncoderlabError):
    """The training loss became NaN/inf: continuing would only train on garbage."""

    def __init__(self, step: int, loss: float, what: str = "training loss"):
        super().__init__(f"{what} became {loss} at step {step}; the learning rate is probably "
                         "too high (lower train.lr, add warmup, keep train.max_grad_norm > 0)")
        self.step, self.loss = step, loss
        self.run_message = str(self)      # the run's failure message: the advice, not the class name


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


def reopen(run, model, opt, sched, state: dict) -> dict:
    """Mark an interrupted run as running again; its newest checkpoint's loop state (weights,
    optimizer, scheduler and RNG restored), or `state` when it has none yet."""
    if run.status == "completed":
        raise StoreError(f"run {run.id} is already completed")
    if run.checkpoints:
        state = checkpoint.load(run.checkpoints[-1], model, opt, sched)
    run.update(status="running", pid=os.getpid(), message=f"resumed at step {state['step']}")
    return state


def write_predictions(path: Path, split, logits: np.ndarray, names: list[str], task: T.Task | None = None) -> None:
    """One row per example: its label, the prediction (class, "a|b" label set or value) and the
    per-class / per-label probabilities."""
    import pandas as pd
    task = task or T.Task("classification", names)
    df = pd.DataFrame({"label": task.gold_column(split.labels, split.labelled), **task.prediction_columns(logits)})
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


class StepTimer:
    """The one step-timing rule of every recipe: train seconds (and so tokens/s) count the training
    steps only; evaluations and checkpoints in between are paused out."""

    def __init__(self, clock: Clock | None = None):
        self.clock, self.t0 = clock, None

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def pause(self, tr: dict) -> None:
        """Add the time since `start` to the running train metrics `tr["seconds"]`."""
        if self.t0 is None:
            return
        dt = time.perf_counter() - self.t0
        tr["seconds"] += dt
        if self.clock:
            self.clock.add("train", dt)
        self.t0 = None

    @contextlib.contextmanager
    def paused(self, tr: dict):
        self.pause(tr)
        try:
            yield
        finally:
            self.start()


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
