"""Re-evaluate a run's stored checkpoints on its own validation or test data.

Each evaluated checkpoint becomes one metrics event ``{"split": "eval:<split>", "step": N, ...}``
appended through `Run.log`, so it lands in metrics.jsonl and in the SQLite index (and survives
`RunStore.rebuild`). A checkpoint already evaluated on a split is skipped unless ``force=True``.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Iterable

import torch

from encoderlab import kinds
from encoderlab.errors import StoreError
from encoderlab.store.runs import Run
from encoderlab.train import checkpoint
from encoderlab.train.classify import setup
from encoderlab.train.loop import predict_logits

SPLITS = ("validation", "test")


def eval_checkpoints(run: Run, split: str = "validation",
                     which: str | int | Iterable[int | str] = "all", *,
                     progress: bool = True, force: bool = False) -> list[dict]:
    """Score the chosen checkpoints of `run` on `split` and log one event per new evaluation.

    `which`: "all", "best" (the checkpoint the run picked, kept by pruning), "last", or step
    numbers (ints, "N" or "step-N"). Returns one flat row per chosen checkpoint, in step order:
    ``{"checkpoint", "step", "epoch", "split", "loss", "accuracy", "macro_f1", "best", "logged"}``
    where ``logged`` is False for a checkpoint skipped because it was already evaluated (its row
    then repeats that earlier evaluation)."""
    if split not in SPLITS:
        raise StoreError(f"cannot evaluate on split '{split}': choose one of {', '.join(SPLITS)}")
    kinds.require(run, "eval")
    ckpts = run.checkpoints
    if not ckpts:
        raise StoreError(f"run {run.id} has no checkpoints to evaluate "
                         f"({run.dir / 'checkpoints'} is empty or missing)")
    by_step = {_step(p): p for p in ckpts}
    best_step = _best_step(ckpts)
    chosen = _choose(run, which, by_step, best_step)

    tag = f"eval:{split}"
    done: dict[int, dict] = {}
    for ev in run.events():
        if ev.get("split") == tag and ev.get("step") is not None:
            done[int(ev["step"])] = ev          # the newest evaluation of a step wins
    todo = [n for n in chosen if force or n not in done]

    new: dict[int, dict] = {}
    if todo:
        new = _evaluate(run, split, [by_step[n] for n in todo], progress)
    rows = []
    for n in chosen:
        ev, logged = (new[n], True) if n in new else (done[n], False)
        m = ev["metrics"]
        rows.append({"checkpoint": f"step-{n}", "step": n, "epoch": ev.get("epoch"), "split": split,
                     "loss": m.get("loss"), "accuracy": m.get("accuracy"), "macro_f1": m.get("macro_f1"),
                     **{k: v for k, v in m.items() if k not in ("loss", "accuracy", "macro_f1")},
                     "best": n == best_step, "logged": logged})
    return rows


def _evaluate(run: Run, split: str, folders: list[Path], progress: bool) -> dict[int, dict]:
    """Build the run's model and data once, then load and score each checkpoint in turn."""
    cfg = run.config()
    labels = run.labels()
    with _torch_state_kept():
        s = setup(cfg, run.store.root)
        if s.data.label_names != labels:
            raise StoreError(f"run {run.id}: its data's labels changed since it was trained "
                             f"({len(labels)} then, {len(s.data.label_names)} now); cannot re-evaluate it")
        enc = s.enc[split]
        if not len(enc):
            raise StoreError(f"run {run.id} has no {split} examples to evaluate on")
        tc = cfg.train
        batches_per_epoch = max(1, math.ceil(len(s.enc["train"]) / tc.batch_size))
        out: dict[int, dict] = {}
        with _Progress(progress, len(folders) * len(enc), split) as bar:
            for folder in folders:
                step = _step(folder)
                bar.checkpoint(folder.name)
                try:
                    checkpoint.load_weights(folder, s.model)
                    state = json.loads((folder / "state.json").read_text())
                except FileNotFoundError as e:
                    raise StoreError(f"run {run.id}: checkpoint {folder.name} disappeared while "
                                     f"evaluating (pruned by the still-running training?)") from e
                logits = predict_logits(s.model, enc, tc.eval_batch_size, s.device, tc.precision,
                                        progress=bar.advance)
                # the same loss and scores as fit's evaluate(), so numbers compare one to one; a
                # multilabel run's checkpoints are scored at 0.5 (its thresholds are tuned at the end)
                loss = s.task.loss(torch.from_numpy(logits), torch.from_numpy(enc.labels), smooth=False).item()
                scores = s.task.scores(logits, getattr(s.data, split).labels, loss)
                metrics, detail = s.task.event(scores)
                event = {"split": f"eval:{split}", "step": step,
                         "epoch": state["epoch"] + state["batch"] / batches_per_epoch,
                         "metrics": metrics,
                         "detail": {"checkpoint": folder.name, **detail, "examples": len(enc)}}
                run.log(event)
                out[step] = event
        del s
    return out


def _step(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def _best_step(ckpts: list[Path]) -> int | None:
    """The best step as the newest checkpoint records it (what fit's final test used)."""
    for folder in reversed(ckpts):
        try:
            best = json.loads((folder / "state.json").read_text()).get("best")
        except (OSError, json.JSONDecodeError):
            continue
        if best:
            return int(best["step"])
    return None


def _choose(run: Run, which, by_step: dict[int, Path], best_step: int | None) -> list[int]:
    steps = sorted(by_step)
    have = ", ".join(f"step-{n}" for n in steps)
    if which == "all":
        return steps
    if which == "last":
        return [steps[-1]]
    if which == "best":
        if best_step is None:
            raise StoreError(f"run {run.id} has not been evaluated yet, so it has no best checkpoint "
                             f"(checkpoints: {have})")
        if best_step not in by_step:
            raise StoreError(f"run {run.id}: its best checkpoint step-{best_step} is not on disk "
                             f"(checkpoints: {have})")
        return [best_step]
    if isinstance(which, (str, int)):
        which = [which]
    chosen = []
    for w in which:
        try:
            n = int(str(w).removeprefix("step-"))
        except ValueError:
            raise StoreError(f"which checkpoint? '{w}' is not all, best, last or a step number") from None
        if n not in by_step:
            raise StoreError(f"run {run.id} has no checkpoint step-{n} (checkpoints: {have})")
        chosen.append(n)
    return sorted(set(chosen))


@contextlib.contextmanager
def _torch_state_kept():
    """`setup` seeds torch and may set its thread count: put both back afterwards."""
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_rng_state(rng)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


class _Progress:
    """A rich progress bar over examples x checkpoints (silent when disabled)."""

    def __init__(self, enabled: bool, total: int, split: str):
        self.enabled, self.total, self.split, self.bar = enabled, total, split, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn(f"[bold]evaluate[/] {self.split} {{task.fields[ckpt]}}"),
                                BarColumn(), TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("eval", total=self.total, ckpt="")
        return self

    def checkpoint(self, name: str) -> None:
        if self.bar:
            self.bar.update(self.task, ckpt=name)

    def advance(self, n: int) -> None:
        if self.bar:
            self.bar.update(self.task, advance=n)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)
