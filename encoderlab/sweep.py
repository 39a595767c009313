"""Sweeps: a grid over dotted config fields x seeds x k folds, each point a stored run in one group.

    [sweep]
    "model.init" = ["pretrained", "random"]
    "train.lr" = [1e-4, 1e-5]
    seeds = [0, 1, 2]
    folds = 5            # optional: stratified k-fold of the training data, test kept fixed

Re-running a sweep skips points whose run completed, resumes interrupted ones from their last
checkpoint, and starts the rest: a killed sweep continues where it stopped."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from encoderlab import config as C
from encoderlab.errors import ConfigError
from encoderlab.store.runs import Run, RunStore


@dataclass(frozen=True)
class Point:
    """One run of the sweep: its config and the values that make it differ from the others."""
    cfg: C.ExperimentConfig
    varied: dict[str, Any]

    @property
    def label(self) -> str:
        return ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in self.varied.items()) or "base"


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def read_spec(raw_sweep: Any, where: str) -> tuple[dict[str, list], list[int], int]:
    if raw_sweep is None:
        return {}, [], 0
    if not isinstance(raw_sweep, dict):
        raise ConfigError(f"{where}: [sweep] must be a table")
    grid, seeds, folds = {}, [], 0
    for key, values in raw_sweep.items():
        if key == "seeds":
            if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ConfigError(f"{where}: sweep.seeds must be a list of integers, got {values!r}")
            seeds = values
        elif key == "folds":
            if not isinstance(values, int) or isinstance(values, bool) or values < 2:
                raise ConfigError(f"{where}: sweep.folds must be an integer >= 2, got {values!r}")
            folds = values
        else:
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: sweep.\"{key}\" must be a non-empty list of values")
            grid[key] = values
    return grid, seeds, folds


def expand(path: str | Path, overrides: list[str] = ()) -> list[Point]:
    """Every point of the sweep declared in `path`, validated (a bad key fails before any run)."""
    raw = C.load_raw(path)
    grid, seeds, folds = read_spec(raw.get("sweep"), str(path))
    base = C.load(path, overrides)
    group = base.group or base.name
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        for seed in seeds or [None]:
            for fold in range(folds) if folds else [None]:
                varied = dict(zip(keys, combo))
                if seed is not None:
                    varied["train.seed"] = seed
                if fold is not None:
                    varied.update({"data.folds": folds, "data.fold": fold})
                try:
                    cfg = C.replace(base, group=group, **varied)
                except ConfigError as e:
                    raise ConfigError(f"{path}: [sweep] {e}") from None
                point = Point(cfg, {k: v for k, v in varied.items() if k != "data.folds"})
                points.append(Point(C.replace(cfg, name=f"{base.name}:{point.label}"), point.varied))
    return points


def existing(store: RunStore, point: Point) -> Run | None:
    """The stored run for this point (same group and config hash), newest first."""
    rows = [r for r in store.list(group=point.cfg.group) if r["config_hash"] == C.config_hash(point.cfg)]
    if not rows:
        return None
    done = [r for r in rows if r["status"] == "completed"]
    pick = done[-1] if done else rows[-1]
    return store.get(pick["id"])


def plan(store: RunStore, points: list[Point]) -> list[tuple[Point, str, Run | None]]:
    """(point, action, run): action is 'skip' (completed), 'busy' (running elsewhere),
    'resume' (interrupted: from its last checkpoint, or from the start in the same run folder when
    it was stopped before the first one) or 'start' (no run yet, or the last one failed)."""
    out = []
    for p in points:
        run = existing(store, p)
        status = run.status if run else None
        if status == "completed":
            out.append((p, "skip", run))
        elif status == "running":
            out.append((p, "busy", run))
        elif status == "interrupted":
            out.append((p, "resume", run))
        else:
            out.append((p, "start", None))
    return out


def run_sweep(points: list[Point], store: RunStore, *, progress: bool = True,
              on_point: Callable[[int, int, Point, str], None] | None = None) -> list[Run]:
    """Run every point not yet completed, in order; returns the runs of all points."""
    from encoderlab.train.fit import fit
    runs = []
    steps = plan(store, points)
    for i, (point, action, run) in enumerate(steps):
        if on_point:
            on_point(i, len(steps), point, action)
        if action == "start":
            run = fit(point.cfg, store, progress=progress)
        elif action == "resume":
            run = fit(point.cfg, store, resume=run, progress=progress)
        if run is not None:
            runs.append(run)
    return runs
