"""Learning-rate range test (Leslie Smith 2015; fastai's `lr_find`), as one straight recipe.

Build the model exactly as `fit` does (`fit.setup`: same init, head, seed; `optim.make_optimizer`:
same AdamW parameter groups, no decay on 1-D params, layer-wise LR decay, freezing), then train on
length-bucketed training batches (cycling the data if needed) while the learning rate grows
geometrically from `start` to `end`. Record the training loss of every step and its smoothed
(bias-corrected EMA) version; stop once the smoothed loss exceeds `diverge` x its minimum (or
turns NaN/inf). Suggest a learning rate from the smoothed curve:

* ``min/10`` (the one returned as ``suggested``): the LR of the minimum smoothed loss / 10;
* ``steepest``: where the smoothed loss falls fastest per decade of LR (most negative slope
  against log10 LR), looked for between the end of the EMA warm-up and the minimum.

``min/10`` is the default because it is the more conservative and the more stable of the two:
with the EMA's lag (0.98 averages ~50 steps, i.e. several decades of LR in a 100-step test) both
points sit later on the curve than in the raw losses, and the steepest point, a finite difference
of a noisy curve, moves more from run to run. Measured: MiniLM-L6 on wordnet-lexname (3,000
examples, batch 32) gave min/10 3.9e-4, steepest 5.6e-4; one epoch of fit at each reached 0.702 /
0.692 validation accuracy (1e-4: 0.562; the min-loss lr 3.9e-3 itself: 0.123, the majority class).
On the tiny test model one epoch at min/10 also beat steepest (0.89 / 0.81).

All learning rates are values of ``train.lr``: every parameter group is scaled in proportion,
so layer-wise decay and a separate ``train.head_lr`` keep their ratio to ``train.lr``. Warmup and
the decay schedule are not used here (the test *is* the schedule). Nothing is written to the run
store; torch's global RNG state and thread count are restored afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from encoderlab import config as C
from encoderlab.encode.long import for_training
from encoderlab.encode.text import train_batches
from encoderlab.errors import ConfigError
from encoderlab.store import atomic
from encoderlab.train.classify import setup
from encoderlab.train.loop import autocast
from encoderlab.train.optim import apply_step, make_optimizer

#: the rule whose LR becomes `LRFindResult.suggested` (the other is still reported)
DEFAULT_RULE = "min/10"
RULES = {"steepest": "steepest descent of the smoothed loss (most negative slope vs log10 lr)",
         "min/10": "lr at the minimum smoothed loss, divided by 10"}


@dataclass
class LRFindResult:
    """One range test: per-step learning rates and losses, the suggestions, how it ended."""
    lrs: list[float]                   # learning rate (train.lr) of each step taken
    losses: list[float]                # training loss of each step
    smoothed: list[float]              # bias-corrected EMA of `losses`
    suggestions: dict[str, float | None]   # {"min/10": lr, "steepest": lr}; None if undefined
    suggested: float                   # the recommended train.lr
    rule: str                          # which rule gave `suggested` (a key of RULES)
    min_lr: float                      # lr at the minimum smoothed loss
    min_loss: float
    diverged: bool                     # stopped early: smoothed loss > diverge x min, or NaN/inf
    stop_lr: float                     # the last lr tried (the divergence point when diverged)
    start: float
    end: float
    steps: int                         # steps requested (len(lrs) <= steps)
    smooth: float
    diverge: float
    seconds: float
    setup: dict = field(default_factory=dict)   # model, data and batch settings the test ran with
    notes: list[str] = field(default_factory=list)  # caveats (range too narrow, too few steps, ...)

    @property
    def lr_range(self) -> tuple[float, float] | None:
        """The learning rates worth searching: min/10 .. (lr at the minimum smoothed loss) / 3, or
        None when the curve has no usable minimum. Why a range: on wordnet-lexname (docs/search.md)
        the best train.lr a search found (~1e-3, 40-configuration grid and TPE) was 1.5-3x above
        min/10 on each of three seeds and below min_lr / 3 on all three, while `steepest` fell
        below it on one seed. One dataset: treat the upper end as a calibration to confirm."""
        lo = self.suggestions.get("min/10")
        if lo is None or not math.isfinite(self.min_lr) or self.min_lr / 3 <= lo:
            return None
        return lo, self.min_lr / 3

    def search_line(self) -> str | None:
        """The `[sweep]` line that searches `lr_range` (log-uniform), for a search experiment."""
        r = self.lr_range
        return None if r is None else f'"train.lr" = {{ log_uniform = [{r[0]:.2g}, {r[1]:.2g}] }}'

    # -- reporting -------------------------------------------------------------------------------

    def summary(self) -> str:
        other = ", ".join(f"{r} {v:.2e}" for r, v in self.suggestions.items()
                          if r != self.rule and v is not None)
        end = (f"diverged at lr {self.stop_lr:.2e} after {len(self.lrs)} of {self.steps} steps"
               if self.diverged else f"reached lr {self.stop_lr:.2e} without diverging")
        r = self.lr_range
        return (f"suggested train.lr = {self.suggested:.2e} ({self.rule}: {RULES[self.rule]})"
                + (f"; also {other}" if other else "")
                + (f"; range worth searching {r[0]:.2e} .. {r[1]:.2e} (min/10 .. min/3)" if r else "")
                + f"; min smoothed loss {self.min_loss:.4f} at lr {self.min_lr:.2e}; {end}; "
                f"{self.seconds:.0f} s" + "".join(f"\nnote: {n}" for n in self.notes))

    def to_dict(self) -> dict:
        """JSON-safe (NaN/inf become null)."""
        d = _json_safe(asdict(self))
        d["range"] = list(self.lr_range) if self.lr_range else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LRFindResult":
        d = dict(d)
        d.pop("range", None)           # derived from the suggestions
        for k in ("losses", "smoothed"):
            d[k] = [float("nan") if v is None else v for v in d[k]]
        return cls(**d)

    @classmethod
    def load(cls, folder: str | Path) -> "LRFindResult":
        return cls.from_dict(json.loads((Path(folder) / "lrfind.json").read_text()))

    def plot(self, path: str | Path) -> Path:
        """A PNG: loss and smoothed loss against lr (log x), the suggestions marked."""
        # the Agg canvas directly, not pyplot: no global backend switch, no figure registry
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        lrs, raw, sm = (np.asarray(v, dtype=float) for v in (self.lrs, self.losses, self.smoothed))
        fig = Figure(figsize=(7.5, 4.5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(lrs, raw, color="0.7", lw=0.8, label="loss per step")
        ax.plot(lrs, sm, color="C0", lw=2, label=f"smoothed (EMA {self.smooth})")
        styles = {"steepest": ("C3", "--"), "min/10": ("C2", ":")}
        for rule, lr in self.suggestions.items():
            if lr is not None:
                color, ls = styles.get(rule, ("C4", "-."))
                ax.axvline(lr, color=color, ls=ls, lw=1.2, label=f"{rule}: {lr:.2e}")
        ok = np.isfinite(sm)
        if ok.any():
            y = float(np.interp(np.log10(self.suggested), np.log10(lrs[ok]), sm[ok]))
            ax.plot([self.suggested], [y], "o", color="C3", ms=9, mfc="none", mew=2,
                    label=f"suggested ({self.rule})")
            fin = np.isfinite(raw)
            lo = float(min(sm[ok].min(), raw[fin].min() if fin.any() else sm[ok].min()))
            hi = float(min(np.nanmax(np.where(ok, sm, np.nan)), self.diverge * self.min_loss,
                           np.nanmax(np.where(fin, raw, np.nan)) if fin.any() else np.inf))
            hi = max(hi, sm[ok][0])
            pad = 0.05 * max(hi - lo, 1e-6)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (train.lr)")
        ax.set_ylabel("training loss")
        ax.set_title(f"LR range test: suggested {self.suggested:.2e} ({self.rule})"
                     + ("" if not self.diverged else f", diverged at {self.stop_lr:.2e}"), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, buf.getvalue())
        return path

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """`folder`/lrfind.json and `folder`/lrfind.png (each written atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_text(folder / "lrfind.json", json.dumps(self.to_dict(), indent=2) + "\n")
        return folder / "lrfind.json", self.plot(folder / "lrfind.png")


def lr_find(cfg: C.ExperimentConfig, *, start: float = 1e-7, end: float = 1.0, steps: int = 100,
            smooth: float = 0.98, diverge: float = 4.0, progress: bool = True,
            store_root=None) -> LRFindResult:
    """Run the range test for the experiment `cfg` (see the module docstring).

    `store_root` is only needed when ``model.path`` is ``run:ID`` (as for `fit.setup`)."""
    if not (0 < start < end and math.isfinite(end)):
        raise ConfigError(f"lr_find: need 0 < start < end, got start={start:g}, end={end:g}")
    if steps < 5:
        raise ConfigError(f"lr_find: steps must be at least 5, got {steps}")
    if not 0 <= smooth < 1:
        raise ConfigError(f"lr_find: smooth must be in [0, 1), got {smooth:g}")
    if not diverge > 1:
        raise ConfigError(f"lr_find: diverge must be > 1, got {diverge:g}")
    tc = cfg.train
    schedule = start * (end / start) ** (np.arange(steps) / (steps - 1))
    t_start = time.perf_counter()
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    diverged = False
    with _torch_state_kept():
        s = setup(cfg, store_root)
        model, enc, device = s.model, for_training(s.enc["train"], tc.seed), s.device
        opt = make_optimizer(model, tc)
        # each group's lr relative to train.lr (layer-wise decay, head_lr), kept while sweeping
        ratios = [g["lr"] / tc.lr for g in opt.param_groups]
        batches = _cycle(enc.lengths, tc)
        avg, best = 0.0, math.inf
        model.train()
        with _Progress(progress, steps) as bar:
            for i, lr in enumerate(schedule):
                for g, r in zip(opt.param_groups, ratios):
                    g["lr"] = float(lr) * r
                group = [next(batches) for _ in range(tc.grad_accum)]
                n_ex = sum(len(b) for b in group)
                loss = 0.0
                for idx in group:
                    batch = {k: v.to(device) for k, v in enc.batch(idx).items()}
                    with autocast(device, tc.precision):
                        out = model(**batch)
                    (out["loss"] * (len(idx) / n_ex)).backward()
                    loss += out["loss"].item() * len(idx) / n_ex
                apply_step(model, opt, None, tc.max_grad_norm)

                avg = smooth * avg + (1 - smooth) * loss
                sm = avg / (1 - smooth ** (i + 1))
                lrs.append(float(lr))
                losses.append(float(loss))
                smoothed.append(float(sm))
                bar.advance(float(lr), sm)
                if not math.isfinite(sm) or (i > 0 and sm > diverge * best):
                    diverged = True
                    break
                best = min(best, sm)
        del model, opt, s
    suggestions, i_min = _suggest(lrs, smoothed)
    rule = DEFAULT_RULE if suggestions.get(DEFAULT_RULE) is not None else \
        next(r for r, v in suggestions.items() if v is not None)
    notes = []
    if suggestions["min/10"] < lrs[0]:
        notes.append(f"the loss was lowest in the first decade of the range; min/10 lies below "
                     f"start={start:g}: repeat with a lower start")
    if suggestions["steepest"] is None:
        notes.append("no descending stretch in the smoothed loss before its minimum "
                     "(range starts too high, or too few steps): steepest is undefined")
    if not diverged and i_min == len(lrs) - 1:
        notes.append(f"the loss was still falling at end={end:g}: repeat with a higher end")
    return LRFindResult(
        lrs=lrs, losses=losses, smoothed=smoothed, suggestions=suggestions,
        suggested=suggestions[rule], rule=rule, min_lr=lrs[i_min], min_loss=smoothed[i_min],
        diverged=diverged, stop_lr=lrs[-1], start=start, end=end, steps=steps, smooth=smooth,
        diverge=diverge, seconds=time.perf_counter() - t_start,
        setup={"model": cfg.model.path, "init": cfg.model.init, "data": cfg.data.source,
               "train_examples": len(enc), "batch_size": tc.batch_size, "grad_accum": tc.grad_accum,
               "precision": tc.precision, "weight_decay": tc.weight_decay,
               "layer_lr_decay": tc.layer_lr_decay, "head_lr_ratio": (tc.head_lr / tc.lr) if tc.head_lr else 1.0,
               "max_grad_norm": tc.max_grad_norm, "seed": tc.seed},
        notes=notes)


def _suggest(lrs: list[float], smoothed: list[float]) -> tuple[dict[str, float | None], int]:
    """{"min/10": lr, "steepest": lr or None} and the index of the minimum smoothed loss."""
    sm = np.asarray(smoothed, dtype=float)
    x = np.log10(np.asarray(lrs, dtype=float))
    sm_ok = np.where(np.isfinite(sm), sm, np.inf)
    i_min = int(np.argmin(sm_ok))
    out: dict[str, float | None] = {"min/10": lrs[i_min] / 10, "steepest": None}
    # skip the EMA's warm-up (its first points average only a few noisy losses) and look on the
    # way down to the minimum only: past it the curve turns up towards divergence
    lo = max(1, len(lrs) // 10)
    if i_min - lo >= 2:
        slope = np.gradient(sm[lo:i_min + 1], x[lo:i_min + 1])
        j = int(np.argmin(slope[:-1]))    # the minimum itself has slope ~0 by definition
        if slope[j] < 0:
            out["steepest"] = lrs[lo + j]
    return out, i_min


def _cycle(lengths: np.ndarray, tc: C.TrainConfig) -> Iterator[np.ndarray]:
    """Training batches as fit draws them (epoch 0, 1, ... order), for as long as needed."""
    epoch = 0
    while True:
        yield from train_batches(lengths, tc.batch_size, seed=tc.seed * 100003 + epoch, bucket=tc.bucket)
        epoch += 1


@contextlib.contextmanager
def _torch_state_kept():
    """`setup` seeds torch and may set its thread count: put both back afterwards."""
    rng = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_rng_state(rng)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


class _Progress:
    """A rich progress bar over the test's steps (silent when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("[bold]lr_find[/]"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("lr {task.fields[lr]:.2e}  loss {task.fields[loss]:.4f}"),
                                TimeElapsedColumn(), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("lr_find", total=self.total, lr=0.0, loss=float("nan"))
        return self

    def advance(self, lr: float, loss: float) -> None:
        if self.bar:
            self.bar.update(self.task, advance=1, lr=lr, loss=loss)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)
