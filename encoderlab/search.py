"""Seed-aware hyperparameter search: Optuna samples configurations, each trial runs every seed of
`[sweep] seeds`, a pruner stops bad trials early, and every run is an ordinary stored run.

    [sweep]
    search = "tpe"                 # grid | random | tpe
    trials = 20                    # grid: default (and at most) the size of the grid
    pruner = "median"              # median | halving | hyperband | none
    prune_after = 1                # the first evaluation point a pruner may prune at
    keep_models = 3                # when done: weights of the best 3 configurations only (0 = all)
    sampler_seed = 0
    seeds = [0, 1, 2]
    "train.lr" = { log_uniform = [1e-5, 1e-3], grid = 5 }   # grid = points for search = "grid"
    "train.warmup_ratio" = [0.0, 0.1]                        # a plain list is a choice
    "train.batch_size" = { int = [8, 32], step = 8 }
    "train.weight_decay" = { uniform = [0.0, 0.1], grid = 3 }

A trial runs its seeds one after another. Its evaluation points are numbered across the seeds
(seed 1's first evaluation is point K + 1 when a run has K), and at each point the pruner sees
the validation metric averaged over the seeds run so far at that evaluation of the run: the
first seed alone, then the mean of two, ... A run whose predictions collapse onto one class
(the `collapse` diagnostic) prunes its trial at once. A pruned run keeps its curves; its status
is `pruned`.

The Optuna study lives beside the run index (`<store>/search.journal`, one study per group).
Re-running `encoderlab sweep FILE` continues it: finished trials stay, a trial cut short by a
kill is asked again with the same parameters, and its seeds whose runs completed are read back
from the store, not run again.

Everything writing the study or the index goes through one `Coordinator` (in this process, or
one Ray actor on the driver's node for `--backend ray`); trial workers only write run folders."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from encoderlab import config as C
from encoderlab import tasks
from encoderlab.metrics import LOWER_IS_BETTER
from encoderlab.errors import ConfigError
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.store.study import STUDY_FILE, storage  # noqa: F401 (search.storage / STUDY_FILE stay public)

SEARCHES = ("grid", "random", "tpe")
PRUNERS = ("median", "halving", "hyperband", "none")
DISTRIBUTIONS = ("log_uniform", "uniform", "int", "choice")
SPEC_KEYS = ("search", "trials", "pruner", "sampler_seed", "seeds", "startup_trials", "prune_after",
             "keep_models")


@dataclass(frozen=True)
class Dist:
    """One searched key: a range (log_uniform, uniform, int) or a list of choices."""
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    grid: int = 0           # grid points of a range for search = "grid"
    step: int | None = None     # int ranges

    def grid_values(self) -> list:
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, self.step or 1))
        n = self.grid
        if n < 2:
            raise ConfigError("needs `grid = N` (N >= 2 points) for search = \"grid\"")
        if self.kind == "log_uniform":
            lo, hi = math.log10(self.low), math.log10(self.high)
            return [float(f"{10 ** (lo + (hi - lo) * i / (n - 1)):.6g}") for i in range(n)]
        return [float(f"{self.low + (self.high - self.low) * i / (n - 1):.6g}") for i in range(n)]

    def optuna(self):
        import optuna.distributions as D
        if self.kind == "choice":
            return D.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return D.IntDistribution(int(self.low), int(self.high), step=self.step or 1)
        return D.FloatDistribution(self.low, self.high, log=self.kind == "log_uniform")


@dataclass(frozen=True)
class Spec:
    search: str
    trials: int
    space: dict[str, Dist]
    seeds: tuple[int, ...]
    pruner: str = "median"
    sampler_seed: int = 0
    startup_trials: int = 3     # trials finished before the pruner may prune (and TPE starts modelling)
    prune_after: int = 1        # a trial's first evaluation point the pruner may prune at (1 = the first)

    def grid(self) -> dict[str, list]:
        return {k: d.grid_values() for k, d in self.space.items()}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())


def declared(path: str | Path) -> bool:
    """True when the file's [sweep] is a search (has `search = ...`)."""
    raw = C.load_raw(path).get("sweep")
    return isinstance(raw, dict) and "search" in raw


def _dist(key: str, value: Any, where: str) -> Dist:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: sweep.\"{key}\" must be a non-empty list of values")
        return Dist("choice", choices=tuple(value))
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: sweep.\"{key}\" must be a list of choices or a table with one of "
                          f"{', '.join(DISTRIBUTIONS)}, got {value!r}")
    kinds = [k for k in value if k in DISTRIBUTIONS]
    extra = [k for k in value if k not in DISTRIBUTIONS and k not in ("grid", "step")]
    if len(kinds) != 1 or extra:
        raise ConfigError(f"{where}: sweep.\"{key}\" needs exactly one of {', '.join(DISTRIBUTIONS)} "
                          f"(and optionally grid / step), got {sorted(value)}")
    kind = kinds[0]
    arg = value[kind]
    if kind == "choice":
        return _dist(key, arg, where)
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(x, (int, float)) for x in arg)
            and arg[0] < arg[1]):
        raise ConfigError(f"{where}: sweep.\"{key}\".{kind} must be [low, high] with low < high, got {arg!r}")
    if kind == "log_uniform" and arg[0] <= 0:
        raise ConfigError(f"{where}: sweep.\"{key}\".log_uniform needs low > 0, got {arg[0]}")
    return Dist(kind, float(arg[0]) if kind != "int" else int(arg[0]), float(arg[1]) if kind != "int" else int(arg[1]),
                grid=int(value.get("grid", 0)), step=value.get("step"))


def read_spec(raw: Any, where: str) -> Spec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [sweep] must be a table")
    search = raw.get("search")
    if search not in SEARCHES:
        raise ConfigError(f"{where}: sweep.search must be one of {', '.join(SEARCHES)}, got {search!r}")
    pruner = raw.get("pruner", "median")
    if pruner not in PRUNERS:
        raise ConfigError(f"{where}: sweep.pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                          for s in seeds):
        raise ConfigError(f"{where}: sweep.seeds must be a non-empty list of integers, got {seeds!r}")
    if "folds" in raw:
        raise ConfigError(f"{where}: sweep.folds is not supported with sweep.search (seeds only)")
    space = {k: _dist(k, v, where) for k, v in raw.items() if k not in SPEC_KEYS}
    if not space:
        raise ConfigError(f"{where}: sweep.search needs at least one searched key, e.g. "
                          '"train.lr" = { log_uniform = [1e-5, 1e-3] }')
    for key in ("trials", "sampler_seed", "startup_trials", "prune_after"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 0):
            raise ConfigError(f"{where}: sweep.{key} must be a non-negative integer, got {raw[key]!r}")
    from encoderlab.sweep import keep_models
    keep_models(raw, where)
    if raw.get("prune_after", 1) < 1:
        raise ConfigError(f"{where}: sweep.prune_after counts evaluation points from 1 (the first), got "
                          f"{raw['prune_after']!r}")
    spec = Spec(search, int(raw.get("trials", 0)), space, tuple(seeds), pruner,
                int(raw.get("sampler_seed", 0)), int(raw.get("startup_trials", 3)), int(raw.get("prune_after", 1)))
    if search == "grid":
        try:
            size = spec.grid_size()
        except ConfigError as e:
            raise ConfigError(f"{where}: sweep: {e}") from None
        spec = Spec(**{**spec.__dict__, "trials": min(spec.trials or size, size)})
    elif not spec.trials:
        raise ConfigError(f"{where}: sweep.trials must be given (>= 1) for search = \"{search}\"")
    return spec


def load(path: str | Path, overrides: list[str] = ()) -> tuple[C.ExperimentConfig, Spec]:
    """The base config and the search spec; every searched key is checked on the base config
    with its first grid value / low end, so a bad key fails before any run."""
    spec = read_spec(C.load_raw(path).get("sweep"), str(path))
    base = C.load(path, overrides)
    base = C.replace(base, group=base.group or base.name)
    for key, d in spec.space.items():
        probe = d.choices[0] if d.kind == "choice" else d.low
        try:
            C.replace(base, **{key: probe})
        except ConfigError as e:
            raise ConfigError(f"{path}: [sweep] {e}") from None
    return base, spec


def label(params: dict[str, Any]) -> str:
    return ",".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                    for k, v in params.items())


def trial_config(base: C.ExperimentConfig, params: dict[str, Any], seed: int) -> C.ExperimentConfig:
    """The run of one seed of a trial: the base config with the trial's values (a searched float
    is rounded to 4 significant digits so equal-looking configurations are equal)."""
    params = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in params.items()}
    cfg = C.replace(base, **params, **{"train.seed": seed})
    return C.replace(cfg, name=f"{base.name}:{label(params)},seed={seed}")


# -- the pruner's view of a trial --------------------------------------------------------------

class Pruned(Exception):
    """Raised from a run's metrics callback to stop it: the trial was pruned (the store's run
    lifecycle marks the run `pruned`, keeping its curves)."""
    run_status = "pruned"

    @property
    def run_message(self) -> str:
        return str(self)


def is_collapsed(event: dict) -> str | None:
    """The `collapse` diagnostic on one validation event: a reason, or None (also before the
    diagnostic's minimum number of steps, where warmup alone may explain one class)."""
    from encoderlab.analysis.rules_run import collapsed
    from encoderlab.analysis.thresholds import MIN_STEPS_TO_JUDGE
    if (event.get("step") or 0) < MIN_STEPS_TO_JUDGE:
        return None
    hit = collapsed(event)
    if hit is None:
        return None
    cls, share, other = hit
    return (f"predictions collapsed onto '{cls}' ({share:.0%} of validation predictions; other classes' "
            f"mean recall {other:.0%})")


@dataclass
class TrialResult:
    number: int
    state: str                      # complete | pruned | failed
    value: float | None             # mean over seeds of each run's best validation metric
    runs: list[str] = field(default_factory=list)
    new_runs: list[str] = field(default_factory=list)   # made by this attempt (to hand back / index)
    steps: int = 0                  # optimizer steps spent by this attempt
    message: str = ""
    node: str = ""                  # the Ray node that ran it (Ray backend)


def run_trial(number: int, configs: list[tuple[int, C.ExperimentConfig]], done: dict[int, dict],
              store: RunStore, report: Callable[[int, float], bool], *, resume: dict[int, Run] | None = None,
              metric: str = "accuracy", prune_collapsed: bool = True) -> TrialResult:
    """Run the seeds of one trial in order into `store`, reporting the seed-averaged validation
    curve to `report(step, value) -> prune?`. `done[seed]` holds a completed run of this seed
    ({"id", "curve", "best"}): replayed, not re-run. `resume[seed]` is an interrupted run to go on
    from its checkpoint (only where the store is the real one, i.e. the local backend).
    `prune_collapsed`: a run whose validation predictions collapse stops the trial at once."""
    from encoderlab.train.fit import fit
    resume = resume or {}
    curves: list[list[float]] = []      # evaluation k -> the seeds' values at it
    step = 0
    out = TrialResult(number, "complete", None)
    bests = []

    def point(k: int, value: float) -> bool:
        nonlocal step
        while len(curves) <= k:
            curves.append([])
        curves[k].append(value)
        step += 1
        return report(step, sum(curves[k]) / len(curves[k]))

    for seed, cfg in configs:
        if seed in done:
            d = done[seed]
            out.runs.append(d["id"])
            bests.append(d["best"])
            for k, v in enumerate(d["curve"]):
                if point(k, v):
                    out.state, out.message = "pruned", f"pruned at evaluation {step} (replayed run {d['id']})"
                    return out
            continue
        evals = []
        prior = resume.get(seed)
        if prior is not None:       # its validation events so far count as if they had just happened
            for ev in prior.events():
                if ev.get("split") == "validation":
                    evals.append(ev)
                    point(len(evals) - 1, ev["metrics"][metric])

        def callback(event: dict) -> None:
            if event.get("split") != "validation":
                return
            evals.append(event)
            why = is_collapsed(event) if prune_collapsed else None
            if why:
                raise Pruned(why)
            k = len(evals) - 1
            if point(k, event["metrics"][metric]):
                mean = sum(curves[k]) / len(curves[k])
                raise Pruned(f"pruned at evaluation {step}: validation {metric} averaged over "
                             f"{len(curves[k])} seed(s) = {mean:.4f} is below the pruner's bar")

        rec = _Recording(store)
        try:
            run = fit(cfg, rec, resume=prior, callback=callback, progress=False)
        except Pruned as e:
            run = prior or (rec.created[-1] if rec.created else None)
            if run is not None:
                # the step it reached (fit counts steps_done after the evaluation the pruner stopped)
                run.update(status="pruned", finished=now(), message=str(e),
                           steps_done=evals[-1]["step"] if evals else run.info.get("steps_done"))
                out.runs.append(run.id)
                out.new_runs.append(run.id)
                out.steps += int(run.info.get("steps_done") or 0)
            out.state, out.message = "pruned", str(e)
            return out
        except Exception as e:
            run = prior or (rec.created[-1] if rec.created else None)
            if run is not None:
                out.runs.append(run.id)
                out.new_runs.append(run.id)
            out.state, out.message = "failed", f"{type(e).__name__}: {e}"[:500]
            return out
        out.runs.append(run.id)
        out.new_runs.append(run.id)
        out.steps += int(run.info.get("steps_done") or 0)
        bests.append(run.info.get("best_value"))
    out.value = sum(bests) / len(bests)
    return out


class _Recording(RunStore):
    """A view of a store that remembers the runs created through it (fit does not return a run
    it stopped)."""

    def __init__(self, store: RunStore):
        self.__dict__.update(store.__dict__)
        self._base = store
        self.created: list[Run] = []

    def create(self, cfg, labels, **fields) -> Run:
        run = self._base.create(cfg, labels, **fields)
        self.created.append(run)
        return run


# -- the coordinator: the one writer of the study and the index --------------------------------

def _pruner(spec: Spec, max_resource: int):
    import optuna.pruners as P
    if spec.pruner == "none":
        return P.NopPruner()
    # evaluation points are Optuna steps 1, 2, ...: none before prune_after is judged
    if spec.pruner == "median":
        return P.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.prune_after)
    if spec.pruner == "halving":
        return P.SuccessiveHalvingPruner(min_resource=spec.prune_after, reduction_factor=3)
    return P.HyperbandPruner(min_resource=spec.prune_after, max_resource=max(max_resource, spec.prune_after),
                             reduction_factor=3)


def _sampler(spec: Spec):
    import optuna.samplers as S
    if spec.search in ("grid", "random"):   # grid: every point is enqueued up front (`Coordinator`)
        return S.RandomSampler(seed=spec.sampler_seed)
    return S.TPESampler(seed=spec.sampler_seed, n_startup_trials=spec.startup_trials)


class Coordinator:
    """Owns the Optuna study and the run index of one search: asks for trials, takes the
    pruner's reports, records results and indexes the run folders workers hand back. Used in
    the driver for the local backend and as one Ray actor for the Ray backend."""

    def __init__(self, store_root: str, base: C.ExperimentConfig, spec: Spec, evals_per_run: int = 0):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.store = RunStore(store_root)
        self.base, self.spec = base, spec
        self.metric = tasks.metric_of(base)     # train.metric "auto": the task's own
        self.direction = "minimize" if self.metric in LOWER_IS_BETTER else "maximize"
        self.study = optuna.create_study(
            study_name=base.group, storage=storage(store_root), load_if_exists=True,
            sampler=_sampler(spec), pruner=_pruner(spec, max(1, evals_per_run) * len(spec.seeds)),
            direction=self.direction)
        self.live: dict[int, Any] = {}
        try:        # what the report compares the search's compute with
            grid = spec.grid_size()
        except ConfigError:
            grid = None
        self.study.set_user_attr("full_grid", grid)
        self.study.set_user_attr("seeds", list(spec.seeds))
        self.study.set_user_attr("search", spec.search)
        self.study.set_user_attr("metric", self.metric)
        if spec.search == "grid" and not self.study.get_trials(deepcopy=False):
            # the grid as enqueued trials, in order (Optuna's GridSampler stops a study from inside
            # `tell`, which only works under `study.optimize`)
            keys = list(spec.space)
            for combo in itertools.product(*(spec.grid()[k] for k in keys)):
                self.study.enqueue_trial(dict(zip(keys, combo)))
        self._recover()

    def _recover(self) -> None:
        """Trials left running by a killed search: mark them failed and ask their parameters again."""
        from optuna.trial import TrialState
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if t.state == TrialState.RUNNING:
                self.study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)

    def finished(self) -> int:
        from optuna.trial import TrialState
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def ask(self) -> tuple[int, dict] | None:
        """The next trial (number, params), or None when `trials` have finished or are running."""
        if self.finished() + len(self.live) >= self.spec.trials:
            return None
        if self.spec.search == "grid" and not self._waiting():
            return None
        trial = self.study.ask({k: d.optuna() for k, d in self.spec.space.items()})
        self.live[trial.number] = trial
        return trial.number, dict(trial.params)

    def _waiting(self) -> int:
        from optuna.trial import TrialState
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def configs(self, params: dict) -> list[tuple[int, C.ExperimentConfig]]:
        return [(s, trial_config(self.base, params, s)) for s in self.spec.seeds]

    def done(self, params: dict) -> dict[int, dict]:
        """Completed runs of this trial's seeds already in the store: {seed: {id, curve, best}}."""
        out = {}
        rows = self.store.list(group=self.base.group, status="completed")
        by_hash = {r["config_hash"]: r for r in rows}
        for seed, cfg in self.configs(params):
            row = by_hash.get(C.config_hash(cfg))
            if row is None:
                continue
            run = self.store.get(row["id"])
            curve = [ev["metrics"][self.metric] for ev in run.events() if ev.get("split") == "validation"]
            out[seed] = {"id": run.id, "curve": curve, "best": run.info.get("best_value")}
        return out

    def interrupted(self, params: dict) -> dict[int, str]:
        """Interrupted runs of this trial's seeds (the local backend resumes them): {seed: run id}."""
        rows = self.store.list(group=self.base.group, status="interrupted")
        by_hash = {r["config_hash"]: r["id"] for r in rows}
        return {s: by_hash[C.config_hash(c)] for s, c in self.configs(params) if C.config_hash(c) in by_hash}

    def report(self, number: int, step: int, value: float) -> bool:
        """One point of a trial's seed-averaged validation curve; True = prune it."""
        trial = self.live[number]
        trial.report(value, step)
        return trial.should_prune()

    def tell(self, result: TrialResult) -> None:
        from optuna.trial import TrialState
        trial = self.live.pop(result.number)
        trial.set_user_attr("runs", result.runs)
        trial.set_user_attr("steps", result.steps)
        if result.message:
            trial.set_user_attr("message", result.message)
        if result.state == "complete":
            self.study.tell(trial, result.value)
        elif result.state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def index(self, run_ids: list[str], folders: list[bytes] = ()) -> None:
        """Index runs whose folders are in the store (unpacking `folders` first: runs a worker
        wrote on its own disk and handed back)."""
        from encoderlab.store.handoff import unpack
        for blob in folders:
            unpack(blob, self.store.root)
        for run_id in run_ids:
            self.store.reindex(run_id)

    def summary(self) -> list[dict]:
        return trials_table(self.study)

    def close(self) -> None:
        self.store.close()


def trials_table(study) -> list[dict]:
    """One row per trial: number, state, value, params, runs, steps."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     "params": dict(t.params), "runs": t.user_attrs.get("runs", []),
                     "steps": t.user_attrs.get("steps", 0), "message": t.user_attrs.get("message", "")})
    return rows


# -- the local backend -------------------------------------------------------------------------

def run_search(path: str | Path, store: RunStore, overrides: list[str] = (),
               on_trial: Callable[[TrialResult, dict], None] | None = None) -> Coordinator:
    """Run (or continue) the search declared in `path` in this process, one trial after another;
    a failed trial (an error, not a pruned one) stops it, as a failed point stops a sweep."""
    base, spec = load(path, overrides)
    coord = Coordinator(str(store.root), base, spec)
    metric = coord.metric
    while True:
        nxt = coord.ask()
        if nxt is None:
            break
        number, params = nxt
        resume = {s: store.get(i) for s, i in coord.interrupted(params).items()}
        result = run_trial(number, coord.configs(params), coord.done(params), store,
                           lambda step, v, n=number: coord.report(n, step, v), resume=resume, metric=metric,
                           prune_collapsed=spec.pruner != "none")
        coord.tell(result)
        if on_trial:
            on_trial(result, params)
        if result.state == "failed":
            break
    return coord
