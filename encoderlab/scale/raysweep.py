"""The Ray backend of `encoderlab sweep`: each point to run becomes one Ray task.

A task calls the same `sweep.run_point` the local backend calls, writing into the same run store,
so the store path must be visible to every Ray worker (one machine, or a shared filesystem on a
cluster). Planning (skip completed, resume interrupted) happens on the driver exactly as in the
local backend; a failing task becomes a failed run and the others go on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from encoderlab import sweep as S
from encoderlab.errors import ConfigError
from encoderlab.store.runs import Run, RunStore

# variables a worker needs to behave like the driver (offline hub, quiet tokenizers)
_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "PYTHONPATH")


def _task(cfg, store_root: str, action: str, run_id: str | None, threads: int, kind: str) -> S.Outcome:
    from encoderlab import machine
    machine.THREADS_DEFAULT = threads    # one thread per reserved CPU, not all the node's cores
    return S.run_point(cfg, store_root, action, run_id, kind=kind, progress=False, keep_going=True)


def connect(address: str | None = None, num_cpus: int | None = None):
    """Join the Ray cluster at `address` ('auto', 'ray://host:port', host:port), or start a
    local one inside this process when `address` is empty (and RAY_ADDRESS is unset)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'encoderlab[ray]'") from None
    if ray.is_initialized():
        return ray
    env = {k: os.environ[k] for k in _ENV if k in os.environ}
    env.setdefault("HF_HUB_OFFLINE", "1")
    kw = dict(runtime_env={"env_vars": env}, log_to_driver=False, configure_logging=False)
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, **kw)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kw)
    return ray


def run_sweep(points: list[S.Point], store: RunStore, *, kind: str = "classification",
              address: str | None = None, cpus_per_run: float = 1, num_cpus: int | None = None,
              on_point: Callable[[int, int, S.Point, str], None] | None = None,
              on_done: Callable[[S.Point, S.Outcome], None] | None = None) -> list[Run]:
    """Submit every point not yet completed as a Ray task (`cpus_per_run` CPUs each) running the
    recipe of run `kind`, wait for all; returns the runs of all points in sweep order (failed
    ones included)."""
    steps = S.plan(store, points, kind)
    todo = [(i, p, a, r) for i, (p, a, r) in enumerate(steps) if a in ("start", "resume")]
    outcomes: dict[int, S.Outcome] = {}
    for i, (p, a, r) in enumerate(steps):
        if on_point:
            on_point(i, len(steps), p, a)
        if r is not None and a not in ("start", "resume"):
            outcomes[i] = S.Outcome(r.id, r.status)
    if todo:
        ray = connect(address, num_cpus)
        task = ray.remote(num_cpus=cpus_per_run, max_retries=0)(_task)
        root = str(Path(store.root).resolve())
        threads = max(1, int(cpus_per_run))
        pending = {task.options(name=p.cfg.name).remote(p.cfg, root, a, r.id if r else None, threads, kind): (i, p)
                   for i, p, a, r in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, p = pending.pop(ready[0])
            try:
                out = ray.get(ready[0])
            except Exception as e:          # the worker itself died (killed, out of memory, lost node)
                out = _record_crash(store, p, f"{type(e).__name__}: {e}"[:500])
            outcomes[i] = out
            if on_done:
                on_done(p, out)
    return [store.get(outcomes[i].run_id) for i in sorted(outcomes) if outcomes[i].run_id]


def _record_crash(store: RunStore, point: S.Point, message: str) -> S.Outcome:
    """A task that died without reporting: mark its run failed (or record one if none started)."""
    run = S.existing(store, point)
    if run is not None and run.status in ("running", "interrupted"):
        run.update(status="failed", message=message)
        return S.Outcome(run.id, "failed", message)
    run = store.create(point.cfg, [], status="failed", message=message, pid=None)
    return S.Outcome(run.id, "failed", message)
