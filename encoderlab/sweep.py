"""Sweeps: a grid over dotted config fields x seeds x k folds, each point a stored run in one group.

    [sweep]
    "model.init" = ["pretrained", "random"]
    "train.lr" = [1e-4, 1e-5]
    seeds = [0, 1, 2]
    folds = 5            # optional: stratified k-fold of the training data, test kept fixed
    keep_models = 2      # optional: when done, only the best 2 configurations keep their weights

Re-running a sweep skips points whose run completed, resumes interrupted ones from their last
checkpoint (kinds that do not resume, e.g. ranking, start them again), and starts the rest: a
killed sweep continues where it stopped. Every point runs the recipe of the sweep's run kind
(`encoderlab.kinds`): `sweep FILE` fine-tunes, `rank FILE` ranks."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from encoderlab import config as C
from encoderlab import kinds
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


def keep_models(raw_sweep: Any, where: str) -> int:
    """`[sweep] keep_models = K`: once the sweep or search has finished, only the runs of the best K
    configurations by validation keep their final weights (`store gc --models`); 0 or absent = all."""
    k = raw_sweep.get("keep_models", 0) if isinstance(raw_sweep, dict) else 0
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ConfigError(f"{where}: sweep.keep_models must be an integer >= 0 (0 = keep every model), got {k!r}")
    return k


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
        elif key == "keep_models":
            keep_models(raw_sweep, where)
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


def plan(store: RunStore, points: list[Point], kind: str = "classification") -> list[tuple[Point, str, Run | None]]:
    """(point, action, run): action is 'skip' (completed), 'busy' (running elsewhere),
    'resume' (interrupted: from its last checkpoint, or from the start in the same run folder when
    it was stopped before the first one) or 'start' (no run yet, the last one failed, or it was
    interrupted and runs of this `kind` do not resume)."""
    resumes = kinds.KINDS[kind].resumes
    out = []
    for p in points:
        run = existing(store, p)
        status = run.status if run else None
        if status == "completed":
            out.append((p, "skip", run))
        elif status == "running":
            out.append((p, "busy", run))
        elif status == "interrupted" and resumes:
            out.append((p, "resume", run))
        else:
            out.append((p, "start", None))
    return out


@dataclass(frozen=True)
class Outcome:
    """What became of one point: its run (None when no run could be created) and status."""
    run_id: str | None
    status: str
    message: str = ""
    node: str = ""          # the Ray node that ran it (Ray backend)


def run_point(cfg: C.ExperimentConfig, store_root: str | Path, action: str, run_id: str | None = None,
              *, kind: str = "classification", progress: bool = False, keep_going: bool = True,
              indexed: bool = True) -> Outcome:
    """Start or resume one point in the store at `store_root` with the recipe of run `kind`: the
    unit of work of every backend (the local loop calls it in-process, the Ray backend once per
    task). With `keep_going`, a failure is recorded as a failed run (created here when the
    recipe failed before its run existed, e.g. unreadable data) instead of raised; Ctrl-C /
    SIGTERM always propagate. `indexed=False`: write the run folder only, never opening the
    store's index (a Ray worker: the driver indexes what it hands back)."""
    recipe = kinds.recipe(kind)
    store = RunStore(store_root, indexed=indexed)
    try:
        before = set(runs_of(store, cfg))
        try:
            resume = {"resume": store.get(run_id)} if action == "resume" else {}
            run = recipe(cfg, store, progress=progress, **resume)
            return Outcome(run.id, run.status)
        except Exception as e:
            if not keep_going:
                raise
            message = f"{type(e).__name__}: {e}"[:500]
            new = [i for i in runs_of(store, cfg) if i not in before]
            if action == "resume":
                new = [run_id]
            if new:     # the recipe marked its run failed already
                return Outcome(new[-1], "failed", message)
            run = store.create(cfg, [], status="failed", message=message, pid=None)
            return Outcome(run.id, "failed", message)
    finally:
        store.close()


def runs_of(store: RunStore, cfg: C.ExperimentConfig) -> list[str]:
    """Ids of the runs of this point's config in `store`, oldest first: from the index, or from
    the run folders of a store that does not open it."""
    h = C.config_hash(cfg)
    if store.indexed:
        return [r["id"] for r in store.list(group=cfg.group) if r["config_hash"] == h]
    return [i for i in store.ids() if (info := store.get(i).info).get("grp") == cfg.group
            and info.get("config_hash") == h]


def run_sweep(points: list[Point], store: RunStore, *, kind: str = "classification", progress: bool = True,
              on_point: Callable[[int, int, Point, str], None] | None = None) -> list[Run]:
    """Run every point not yet completed, in order, in this process, as runs of `kind`; returns
    the runs of all points. The first failure stops the sweep (re-running continues after the
    finished points)."""
    runs = []
    steps = plan(store, points, kind)
    for i, (point, action, run) in enumerate(steps):
        if on_point:
            on_point(i, len(steps), point, action)
        if action in ("start", "resume"):
            out = run_point(point.cfg, store.root, action, run.id if run else None, kind=kind,
                            progress=progress, keep_going=False)
            run = store.get(out.run_id)
        if run is not None:
            runs.append(run)
    return runs
