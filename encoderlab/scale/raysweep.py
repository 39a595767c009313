"""The Ray backend of `encoderlab sweep`: each point to run becomes one Ray task.

One writer: the driver (this process, where the store is) is the only one that opens the run
index. A task calls the same `sweep.run_point` the local backend calls, but into a store on its
own node's disk (`$ENCODERLAB_SCRATCH`, else the system temp dir) that has no index, and returns
the run folder packed (`store.handoff`); the driver unpacks it into the real store and indexes it
as each task finishes, so the index stays a rebuildable copy of the folders (`encoderlab store
rebuild`) and SQLite is never shared between hosts. With `shared=True` (a store path every node
sees) tasks write run folders straight into the store, still without touching the index.
Planning (skip completed, resume interrupted) happens on the driver exactly as in the local
backend; an interrupted run to resume travels to its task with its checkpoints, and a run the
config names as `run:REF` (a pretrained or fine-tuned base model) travels to every task that needs
it. A failing task becomes a failed run and the others go on."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from encoderlab import sweep as S
from encoderlab.errors import ConfigError
from encoderlab.store.runs import Run, RunStore

# variables a worker needs to behave like the driver (offline hub, quiet tokenizers)
_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "PYTHONPATH")


def scratch_store(prefix: str) -> Path:
    """A fresh folder on this node's own disk for a task's run folders (no index)."""
    scratch = Path(os.environ.get("ENCODERLAB_SCRATCH") or tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=scratch))


def run_refs(cfg) -> list[str]:
    """The `run:REF` values in a config (model.path, model.tokenizer, ...): stored runs a task
    needs on its own disk."""
    out = []

    def walk(v):
        if dataclasses.is_dataclass(v):
            for f in dataclasses.fields(v):
                walk(getattr(v, f.name))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, str) and v.startswith("run:") and v[4:] not in out:
            out.append(v[4:])
    walk(cfg)
    return out


def parents(ray, names: list[str], store: RunStore, cache: dict) -> list:
    """Object refs of the packed run folders (no checkpoints) of the runs `names` (`run_refs`),
    each put into Ray once (`cache`, by run id): a task without the shared store unpacks them into
    its scratch store, where `run:REF` then resolves as it would in the real one (by id or name)."""
    from encoderlab.store.handoff import pack
    refs = []
    for ref in names:
        run = store.get(ref)
        if run.id not in cache:
            cache[run.id] = ray.put(pack(run.dir))
        refs.append(cache[run.id])
    return refs


def install(ray, blobs: list, root: Path) -> None:
    """Unpack the run folders of `parents` (object refs) into a task's scratch store."""
    from encoderlab.store.handoff import unpack
    for blob in ray.get(list(blobs)):
        unpack(blob, root)


def _task(cfg, store_root: str, action: str, run_id: str | None, threads: int, kind: str, shared: bool,
          prior: bytes | None, needs: list) -> tuple[S.Outcome, bytes | None]:
    import ray
    from encoderlab import machine
    from encoderlab.store.handoff import pack, unpack
    machine.THREADS_DEFAULT = threads    # one thread per reserved CPU, not all the node's cores
    node = ray.get_runtime_context().get_node_id()
    root = Path(store_root) if shared else scratch_store("point-")
    try:
        install(ray, needs, root)        # the runs its config names as run:REF (a fine-tuned base, ...)
        if prior is not None:            # the interrupted run to resume, with its checkpoints
            unpack(prior, root)
        out = S.run_point(cfg, root, action, run_id, kind=kind, progress=False, keep_going=True, indexed=False)
        blob = pack(root / out.run_id) if not shared and out.run_id else None
        return dataclasses.replace(out, node=node), blob
    finally:
        if not shared:
            shutil.rmtree(root, ignore_errors=True)


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
              shared: bool = False,
              on_point: Callable[[int, int, S.Point, str], None] | None = None,
              on_done: Callable[[S.Point, S.Outcome], None] | None = None) -> list[Run]:
    """Submit every point not yet completed as a Ray task (`cpus_per_run` CPUs each) running the
    recipe of run `kind`, index each run as its task returns, wait for all; returns the runs of
    all points in sweep order (failed ones included). `shared`: the store path is visible to
    every node (tasks write their folders there instead of handing them back)."""
    from encoderlab.store.handoff import pack, unpack
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
        pending, cache = {}, {}
        for i, p, a, r in todo:
            prior = pack(r.dir, checkpoints=True) if a == "resume" and not shared else None
            needs = [] if shared else parents(ray, run_refs(p.cfg), store, cache)
            ref = task.options(name=p.cfg.name).remote(p.cfg, root, a, r.id if r else None, threads, kind,
                                                       shared, prior, needs)
            pending[ref] = (i, p)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, p = pending.pop(ready[0])
            try:
                out, blob = ray.get(ready[0])
                if blob is not None:
                    unpack(blob, store.root)
                if out.run_id:
                    store.reindex(out.run_id)
            except Exception as e:          # the worker itself died (killed, out of memory, lost node)
                out = _record_crash(store, p, f"{type(e).__name__}: {e}"[:500])
            outcomes[i] = out
            if on_done:
                on_done(p, out)
    return [store.get(outcomes[i].run_id) for i in sorted(outcomes) if outcomes[i].run_id]


def _record_crash(store: RunStore, point: S.Point, message: str) -> S.Outcome:
    """A task that died without reporting: mark its run failed (or record one if none started).
    A run folder it left in a shared store is indexed first."""
    indexed = set(S.runs_of(store, point.cfg))
    for run_id in S.runs_of(RunStore(store.root, indexed=False), point.cfg):
        if run_id not in indexed:
            store.reindex(run_id)
    run = S.existing(store, point)
    if run is not None and run.status in ("running", "interrupted"):
        run.update(status="failed", message=message)
        return S.Outcome(run.id, "failed", message)
    run = store.create(point.cfg, [], status="failed", message=message, pid=None)
    return S.Outcome(run.id, "failed", message)
