"""The search section of a report: read from the Optuna study stored beside the run index
(`<store>/search.journal`) and the runs of its group. Best configurations with mean ± std over
seeds, parameter importance (Optuna's default evaluator, fANOVA), a slice plot per parameter and
the compute spent against the full grid over the same space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from encoderlab.analysis.facts import read_facts
from encoderlab.analysis.render import Table
from encoderlab.analysis.stats import fmt_pm, mean_std
from encoderlab.store.runs import Run


@dataclass
class SearchSection:
    group: str
    best: Table
    importance: Table | None
    compute: Table
    slice_png: bytes
    notes: list[str]


def load_study(runs: Sequence[Run]):
    """The study of the runs' group, or None when they were not made by a search."""
    if not runs:
        return None
    from encoderlab.store import study as ST
    root = runs[0].store.root
    if not (root / ST.STUDY_FILE).exists():
        return None
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    group = runs[0].info.get("grp") or ""
    try:
        return optuna.load_study(study_name=group, storage=ST.storage(root))
    except KeyError:
        return None


def section(runs: Sequence[Run], top: int = 5) -> SearchSection | None:
    study = load_study(runs)
    if study is None:
        return None
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    store = runs[0].store
    by_id = {f.id: f for f in read_facts(store.get(r["id"]) for r in store.list(group=study.study_name))}
    lower = study.direction.name == "MINIMIZE"
    metric = study.user_attrs.get("metric", "accuracy")     # studies before it was stored: accuracy
    done.sort(key=lambda t: t.value, reverse=not lower)
    rows, seen = [], set()
    for t in done:
        key = tuple(sorted(t.params.items()))
        if key in seen:         # a repeated configuration reuses the same runs
            continue
        seen.add(key)
        facts = [by_id[i] for i in t.user_attrs.get("runs", []) if i in by_id]
        val = mean_std(f.value("validation", metric) for f in facts)
        test = mean_std(f.value("test", metric) for f in facts)
        rows.append({"trial": t.number, **{k.split(".")[-1]: v for k, v in t.params.items()},
                     "validation": fmt_pm(val[0], val[1]), "test": fmt_pm(test[0], test[1]), "seeds": test[2]})
        if len(rows) >= top:
            break
    # parameters are config values: 9.067e-04, not 0.0009
    pcols = [(k.split(".")[-1], k, "g") for k in (done[0].params if done else {})]
    best = Table(rows, [("trial", "trial"), *pcols, ("validation", f"validation {metric} (selection)"),
                        ("test", f"test {metric}"), ("seeds", "seeds")],
                 title=f"best configurations by mean best-validation {metric} over seeds (top {top})")
    importance = None
    notes = []
    if len(done) >= 2:
        try:
            import optuna
            imp = optuna.importance.get_param_importances(study)
            importance = Table([{"parameter": k, "importance": v} for k, v in imp.items()],
                               [("parameter", "parameter"), ("importance", "importance (fANOVA)")],
                               title="parameter importance (optuna.importance, fANOVA)")
        except Exception as e:      # too few distinct values, or one parameter
            notes.append(f"no parameter importance: {type(e).__name__}: {e}")
    states = [t.state.name.lower() for t in trials]
    group_rows = runs[0].store.list(group=study.study_name)
    spent = sum(int(r["steps_done"] or 0) for r in group_rows)
    full = [int(r["steps_done"] or 0) for r in group_rows if r["status"] == "completed"]
    per_run = int(np.median(full)) if full else None
    grid = study.user_attrs.get("full_grid")
    seeds = len(study.user_attrs.get("seeds", [])) or 1
    grid_steps = grid * seeds * per_run if grid and per_run else None
    compute = Table([{"quantity": "trials (complete / pruned / failed)",
                      "value": f"{states.count('complete')} / {states.count('pruned')} / {states.count('fail')}"},
                     {"quantity": "runs (completed / pruned)",
                      "value": f"{sum(r['status'] == 'completed' for r in group_rows)} / "
                               f"{sum(r['status'] == 'pruned' for r in group_rows)}"},
                     {"quantity": "optimizer steps spent", "value": str(spent)},
                     {"quantity": "full grid: configurations x seeds x steps of a full run",
                      "value": f"{grid} x {seeds} x {per_run} = {grid_steps}" if grid_steps else "-"},
                     {"quantity": "share of the full grid's compute",
                      "value": f"{spent / grid_steps:.0%}" if grid_steps else "-"}],
                    [("quantity", "quantity"), ("value", "value")], title="compute spent vs the full grid")
    return SearchSection(study.study_name, best, importance, compute, slice_plot(study), notes)


def slice_plot(study) -> bytes:
    """One panel per parameter: the objective of each complete trial against the parameter's
    value (log axis for log-uniform ones); pruned trials as grey crosses at their last reported
    seed-averaged value."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState
    from encoderlab.analysis.plots import png, pyplot
    plt = pyplot()
    trials = study.get_trials(deepcopy=False)
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    fig, axes = plt.subplots(1, max(1, len(params)), figsize=(4.5 * max(1, len(params)), 3.4), squeeze=False)
    for ax, p in zip(axes[0], params):
        for state, style in ((TrialState.COMPLETE, dict(c="tab:blue", marker="o", label="complete")),
                             (TrialState.PRUNED, dict(c="grey", marker="x", label="pruned"))):
            xs, ys = [], []
            for t in trials:
                if t.state != state or p not in t.params:
                    continue
                y = t.value if state == TrialState.COMPLETE else (
                    t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
                if y is not None:
                    xs.append(t.params[p])
                    ys.append(y)
            if xs:
                ax.scatter([str(x) if isinstance(x, str) else x for x in xs], ys, s=22, **style)
        dist = next((t.distributions[p] for t in trials if p in t.distributions), None)
        if isinstance(dist, FloatDistribution) and dist.log:
            ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel("mean best validation" if ax is axes[0][0] else "")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"slice plot: search '{study.study_name}'", fontsize=10)
    fig.tight_layout()
    return png(fig)
