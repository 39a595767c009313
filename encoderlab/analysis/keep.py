"""Which final models a group of runs keeps: `encoderlab store gc --models --group G --keep-best K`.

A 40-configuration x 3-seed grid stores 120 final models (~90 MB each for MiniLM-L6) although one
configuration is picked. The group's completed runs are grouped into configurations (the
definition `compare` uses), ranked by the mean over seeds of each run's best validation value of
the group's metric, and the runs of the best K configurations keep their weights; the others lose
only their weight files (`store.space.drop_weights`): config, metrics, curves, predictions and
diagnostics stay, so `compare`, `report` and `show` read the group as before. The rule looks at
validation only, never at test. A configuration without a validation score keeps its models.
"""

from __future__ import annotations

from dataclasses import dataclass

from encoderlab.analysis.configs import REPLICATE_KEYS, group, label, varied_fixed
from encoderlab.analysis.facts import read_facts
from encoderlab.analysis.stats import mean_std
from encoderlab.metrics import LOWER_IS_BETTER
from encoderlab.store import space


@dataclass
class Decision:
    run: str
    config: str
    rank: int | None        # of the run's configuration, 1 = best on validation; None = unranked
    value: float | None     # the configuration's validation mean
    keep: bool
    reason: str
    model_bytes: int


def plan(store, group_name: str, keep_best: int = 1, metric: str | None = None) -> tuple[list[Decision], str]:
    """(one decision per completed run of the group that still has weights, the metric ranked by)."""
    from encoderlab.tasks import metric_for_runs
    if keep_best < 1:
        raise ValueError("keep_best must be >= 1")
    weights: dict[str, int] = {}      # run id -> bytes of its final weights (runs without any are done)
    runs = []
    for info in store.list(group=group_name):
        if store.effective_status(info) != "completed":
            continue
        run = store.get(info["id"])
        files = space.weight_files(run.dir)
        if files:
            weights[run.id] = sum(p.stat().st_size for p in files)
            runs.append(run)
    if not runs:
        return [], metric or "accuracy"
    facts = read_facts(runs)
    metric = metric or metric_for_runs([f.info for f in facts])
    configs = group(facts, REPLICATE_KEYS)
    varied, _ = varied_fixed([g[0].flat for g in configs], REPLICATE_KEYS)
    scored = []
    for g in configs:
        m, _s, _n = mean_std(f.value("validation", metric) for f in g)
        scored.append((m, g))
    ranked = sorted((x for x in scored if x[0] is not None), key=lambda x: x[0],
                    reverse=metric not in LOWER_IS_BETTER)
    rank_of = {id(g): i + 1 for i, (_m, g) in enumerate(ranked)}
    out = []
    for m, g in scored:
        name = label(g[0].flat, varied) if varied else g[0].name
        rank = rank_of.get(id(g))
        if rank is None:
            keep, why = True, f"no validation {metric} to rank by"
        elif rank <= keep_best:
            keep, why = True, f"configuration ranked {rank} of {len(ranked)} by validation {metric}"
        else:
            keep, why = False, (f"configuration ranked {rank} of {len(ranked)} by validation {metric}, "
                                f"{keep_best} kept")
        for f in g:
            out.append(Decision(f.id, name, rank, m, keep, why, weights[f.id]))
    out.sort(key=lambda d: (d.rank is None, d.rank or 0, d.run))
    return out, metric


def apply(store, decisions: list[Decision]) -> int:
    """Remove the weights of the runs not kept; returns bytes freed. A run no longer completed
    (resumed meanwhile) is left alone."""
    freed = 0
    for d in decisions:
        if d.keep:
            continue
        run = store.get(d.run)
        if store.effective_status(run.info) != "completed":
            d.keep, d.reason = True, "no longer completed: left alone"
            continue
        freed += space.drop_weights(run.dir, {"reason": d.reason, "by": "encoderlab store gc --models"})
    return freed
