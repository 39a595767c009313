"""Seed-aware search: the [sweep] search spec, the Optuna engine with its study in the store,
resuming a killed search without re-running finished trials, and pruning (median bar, collapse)."""

from __future__ import annotations

import pytest

from conftest import tiny_experiment, two_class_data_toml
from encoderlab import search as SE
from encoderlab.errors import ConfigError
from encoderlab.store.runs import RunStore

pytest.importorskip("optuna")


def write(tmp_path, folder, sweep: str, train: dict | None = None) -> str:
    return tiny_experiment(tmp_path / "exp.toml", "se", two_class_data_toml(folder) + "\nmax_train = 96",
                           encode={"max_length": 32}, train={"eval_every_steps": 2, **(train or {})}, sweep=sweep)


GRID = 'search = "grid"\npruner = "none"\nseeds = [0, 1]\n"train.lr" = { log_uniform = [1e-4, 1e-2], grid = 3 }'


def test_spec_reads_distributions_and_grid(two_class_csv, tmp_path):
    path = write(tmp_path, two_class_csv, 'search = "tpe"\ntrials = 7\nseeds = [0, 1, 2]\n'
                 '"train.lr" = { log_uniform = [1e-5, 1e-3], grid = 5 }\n"train.warmup_ratio" = [0.0, 0.1]\n'
                 '"train.batch_size" = { int = [8, 32], step = 8 }\n'
                 '"train.weight_decay" = { uniform = [0.0, 0.1], grid = 3 }')
    assert SE.declared(path)
    base, spec = SE.load(path)
    assert (spec.search, spec.trials, spec.seeds, spec.pruner) == ("tpe", 7, (0, 1, 2), "median")
    grid = spec.grid()
    assert grid["train.lr"] == [1e-5, 3.16228e-5, 1e-4, 0.000316228, 1e-3]
    assert grid["train.batch_size"] == [8, 16, 24, 32]
    assert grid["train.weight_decay"] == [0.0, 0.05, 0.1]
    assert spec.grid_size() == 5 * 2 * 4 * 3
    cfg = SE.trial_config(base, {"train.lr": 0.000123456, "train.warmup_ratio": 0.1}, 2)
    assert cfg.train.lr == 0.0001235 and cfg.train.seed == 2 and cfg.group == "se"
    assert cfg.name == "se:lr=0.0001235,warmup_ratio=0.1,seed=2"


@pytest.mark.parametrize("sweep, message", [
    ('search = "bayes"\n"train.lr" = [1e-3]', "sweep.search must be one of"),
    ('search = "tpe"\n"train.lr" = [1e-3]', "sweep.trials must be given"),
    ('search = "grid"\n"train.lr" = { log_uniform = [1e-4, 1e-2] }', "grid = N"),
    ('search = "random"\ntrials = 2\n"train.lr" = { log_uniform = [0, 1e-2] }', "needs low > 0"),
    ('search = "random"\ntrials = 2\n"train.lr" = { normal = [0, 1] }', "needs exactly one of"),
    ('search = "random"\ntrials = 2\n"train.lrr" = [1e-3]', "did you mean 'train.lr'"),
    ('search = "random"\ntrials = 2\npruner = "asha"\n"train.lr" = [1e-3]', "sweep.pruner"),
])
def test_bad_search_specs_fail_before_any_run(two_class_csv, tmp_path, sweep, message):
    with pytest.raises(ConfigError, match=message):
        SE.load(write(tmp_path, two_class_csv, sweep))


def test_grid_search_runs_every_seed_of_every_trial_and_resumes(two_class_csv, tmp_path):
    path = write(tmp_path, two_class_csv, GRID)
    store = RunStore(tmp_path / "runs")
    seen = []
    coord = SE.run_search(path, store, on_trial=lambda r, p: seen.append(r))
    rows = coord.summary()
    coord.close()
    assert len(rows) == 3 and all(r["state"] == "complete" for r in rows)
    assert {r["params"]["train.lr"] for r in rows} == {1e-4, 1e-3, 1e-2}
    runs = store.list(group="se")
    assert len(runs) == 6 and {r["status"] for r in runs} == {"completed"}
    assert (tmp_path / "runs" / SE.STUDY_FILE).exists()
    # run again: the study says it is finished; nothing new is trained
    coord = SE.run_search(path, store)
    coord.close()
    assert len(store.list(group="se")) == 6
    store.close()


def test_killed_search_resumes_without_rerunning_finished_runs(two_class_csv, tmp_path):
    """A search killed in the middle of a trial (after its first seed completed): the next
    `sweep FILE` asks the trial's parameters again, reads the completed seed back from the store,
    runs only the missing seed, and leaves the finished trial alone."""
    path = write(tmp_path, two_class_csv, GRID)
    store = RunStore(tmp_path / "runs")
    base, spec = SE.load(path)
    coord = SE.Coordinator(str(store.root), base, spec)
    n, params = coord.ask()
    coord.tell(SE.run_trial(n, coord.configs(params), {}, store, lambda s, v: coord.report(n, s, v)))
    n2, params2 = coord.ask()
    first_seed = coord.configs(params2)[:1]           # the kill: seed 0 done, seed 1 never started
    SE.run_trial(n2, first_seed, {}, store, lambda s, v: coord.report(n2, s, v))
    coord.close()
    before = {r["id"] for r in store.list(group="se")}
    assert len(before) == 3

    coord = SE.run_search(path, store)
    rows = coord.summary()
    coord.close()
    states = [r["state"] for r in rows]
    assert states.count("complete") == 3 and states.count("fail") == 1
    retried = [r for r in rows if r["state"] == "complete" and r["params"] == params2]
    assert len(retried) == 1 and retried[0]["trial"] > n2
    after = store.list(group="se")
    assert len(after) == 6                       # 3 made before + 1 missing seed + 2 of the third trial
    assert before <= {r["id"] for r in after}
    assert set(retried[0]["runs"]) & before       # the completed seed was reused, not re-run
    store.close()


def test_pruner_sees_the_curve_averaged_over_the_seeds_run_so_far(tmp_path):
    """Completed seeds are replayed (no training): evaluation k of seed j reports the mean over
    seeds 0..j at k, numbered across seeds."""
    seen = []
    done = {0: {"id": "a", "curve": [0.5, 0.7], "best": 0.7}, 1: {"id": "b", "curve": [0.7, 0.9], "best": 0.9}}
    out = SE.run_trial(0, [(0, None), (1, None)], done, RunStore(tmp_path / "runs"),
                       lambda step, v: seen.append((step, round(v, 6))) or False)
    assert seen == [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.8)]
    assert (out.state, out.value, out.runs, out.steps) == ("complete", pytest.approx(0.8), ["a", "b"], 0)


def test_pruned_run_keeps_its_curve_and_status(two_class_csv, tmp_path):
    path = write(tmp_path, two_class_csv, GRID)
    store = RunStore(tmp_path / "runs")
    base, spec = SE.load(path)
    configs = [(s, SE.trial_config(base, {"train.lr": 1e-3}, s)) for s in (0, 1)]
    out = SE.run_trial(0, configs, {}, store, lambda step, v: step >= 2)
    assert out.state == "pruned" and len(out.runs) == 1 and "evaluation 2" in out.message
    run = store.get(out.runs[0])
    assert run.status == "pruned" and run.info["finished"]
    assert [e["step"] for e in run.events() if e["split"] == "validation"] == [2, 4]
    assert [r["id"] for r in store.list(status="pruned")] == [run.id]
    store.rebuild()                                   # the folder says pruned too
    assert store.list(group="se")[0]["status"] == "pruned"
    store.close()


def test_collapsed_run_is_pruned_at_once(two_class_csv, tmp_path):
    """A real collapsed run (lr 0.5: every validation prediction is one class) stops its trial at
    the first evaluation the collapse diagnostic may judge (step >= 20), whatever the pruner says."""
    path = write(tmp_path, two_class_csv, GRID, train={"warmup_ratio": 0.0})
    store = RunStore(tmp_path / "runs")
    base, _ = SE.load(path, ["train.batch_size=4", "train.eval_every_steps=10"])
    configs = [(s, SE.trial_config(base, {"train.lr": 0.5}, s)) for s in (0, 1)]
    out = SE.run_trial(0, configs, {}, store, lambda step, v: False)
    assert out.state == "pruned" and "collapsed onto" in out.message
    run = store.get(out.runs[0])
    assert run.status == "pruned" and "collapsed" in run.info["message"]
    steps = [e["step"] for e in run.events() if e["split"] == "validation"]
    assert steps == [10, 20]              # step 10 collapsed too, but is too early to judge
    store.close()


@pytest.mark.parametrize("prune_after, first_prunable", [(1, 1), (2, 2), (3, 3)])
def test_prune_after_holds_every_pruner_until_that_evaluation(prune_after, first_prunable):
    """A learning-rate warmup starts slow: `prune_after = k` lets the median, halving and hyperband
    pruners judge a trial from its k-th evaluation point on (Optuna's steps), never before."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for pruner in ("median", "halving", "hyperband"):
        spec = SE.read_spec({"search": "random", "trials": 7, "pruner": pruner, "startup_trials": 2,
                             "prune_after": prune_after,
                             "train.lr": {"log_uniform": [1e-4, 1e-2]}}, "exp.toml")
        study = optuna.create_study(direction="maximize", pruner=SE._pruner(spec, 6))
        for good in range(6):                 # finished trials with a high curve
            t = study.ask()
            for step in range(1, 7):
                t.report(0.5 + 0.01 * good + 0.01 * step, step)
                assert not t.should_prune()     # (halving records a trial's rungs as it asks)
            study.tell(t, 0.6 + 0.01 * good)
        bad = study.ask()
        prunes = []
        for step in range(1, 7):
            bad.report(0.01, step)
            prunes.append(bad.should_prune())
        assert not any(prunes[:first_prunable - 1]), (pruner, prunes)
        assert any(prunes[first_prunable - 1:]), (pruner, prunes)


def test_prune_after_must_count_from_one():
    with pytest.raises(ConfigError, match="prune_after counts evaluation points from 1"):
        SE.read_spec({"search": "tpe", "prune_after": 0, "train.lr": [1e-3]}, "exp.toml")
