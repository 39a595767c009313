"""The Ray backend of a search (`encoderlab sweep FILE --backend ray` on a [sweep] with `search`):
one Ray task per trial, as many at once as the cluster has `--cpus-per-run` slots.

One writer: the Optuna study and the run index belong to one `search.Coordinator` Ray actor,
pinned to the driver's node, where the store is. A trial's task writes its run folders into a
store on its own node's disk (`$ENCODERLAB_SCRATCH`, else the system temp dir) that has no
index, and returns them packed (`store.handoff`); the actor unpacks them into the real store and
indexes them as each trial finishes. Pruning reports go to the actor too. So nothing but the
actor opens `index.sqlite`, and the store stays rebuildable from its folders
(`encoderlab store rebuild`). With `shared=True` (a store path every node sees) tasks write run
folders straight into the store, still without touching the index."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from encoderlab import search as SE
from encoderlab import tasks
from encoderlab.scale.raysweep import connect, install, parents, run_refs, scratch_store
from encoderlab.store.runs import RunStore


def _trial(coord, number: int, configs: list, done: dict, store_root: str, shared: bool, metric: str,
           prune_collapsed: bool, threads: int, needs: list = ()):
    import ray
    from encoderlab import machine
    from encoderlab.store.handoff import pack
    machine.THREADS_DEFAULT = threads
    node = ray.get_runtime_context().get_node_id()
    root = Path(store_root) if shared else scratch_store(f"trial-{number}-")
    store = RunStore(root, indexed=False)
    try:
        if not shared:
            install(ray, needs, root)       # runs the config names as run:REF
        result = SE.run_trial(number, configs, done, store,
                              lambda step, v: ray.get(coord.report.remote(number, step, v)),
                              metric=metric, prune_collapsed=prune_collapsed)
        result.node = node
        blobs = [] if shared else [pack(root / rid) for rid in result.new_runs]
        return result, blobs
    finally:
        if not shared:
            shutil.rmtree(root, ignore_errors=True)


class Handle:
    """What the driver keeps of a finished Ray search (the `Coordinator` interface the CLI reads)."""

    def __init__(self, base, rows):
        self.base, self._rows = base, rows

    def summary(self) -> list[dict]:
        return self._rows

    def close(self) -> None:
        pass


def run_search(path: str | Path, store: RunStore, overrides: list[str] = (), *, address: str | None = None,
               cpus_per_run: float = 1, num_cpus: int | None = None, shared: bool = False,
               on_trial: Callable[[SE.TrialResult, dict], None] | None = None) -> Handle:
    """Run (or continue) the search in `path` on Ray; returns when `trials` trials finished."""
    base, spec = SE.load(path, overrides)
    ray = connect(address, num_cpus)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    root = str(Path(store.root).resolve())
    searched = [v[4:] for d in spec.space.values() for v in d.choices if isinstance(v, str) and v.startswith("run:")]
    needs = [] if shared else parents(ray, list(dict.fromkeys(run_refs(base) + searched)), store, {})
    store.close()       # the driver never holds the index open: the actor is its one writer
    coord = ray.remote(num_cpus=0)(SE.Coordinator).options(scheduling_strategy=here).remote(root, base, spec)
    task = ray.remote(num_cpus=cpus_per_run, max_retries=0)(_trial)
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_run))
    threads = max(1, int(cpus_per_run))
    prune_collapsed = spec.pruner != "none"
    pending: dict = {}
    asking = True
    while True:
        while asking and len(pending) < slots:
            nxt = ray.get(coord.ask.remote())
            if nxt is None:
                asking = False
                break
            number, params = nxt
            configs = ray.get(coord.configs.remote(params))
            done = ray.get(coord.done.remote(params))
            ref = task.options(name=f"trial-{number}").remote(coord, number, configs, done, root, shared,
                                                              tasks.metric_of(base), prune_collapsed, threads, needs)
            pending[ref] = (number, params)
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        number, params = pending.pop(ready[0])
        try:
            result, blobs = ray.get(ready[0])
        except Exception as e:          # the worker died (killed, out of memory, lost node)
            result, blobs = SE.TrialResult(number, "failed", None, message=f"{type(e).__name__}: {e}"[:500]), []
        ray.get(coord.index.remote(result.new_runs, blobs))
        ray.get(coord.tell.remote(result))
        if on_trial:
            on_trial(result, params)
    rows = ray.get(coord.summary.remote())
    ray.get(coord.close.remote())
    ray.kill(coord)
    return Handle(base, rows)
