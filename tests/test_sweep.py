"""Sweeps: expansion (grid x seeds x folds), validation, and continuing a killed sweep."""

from __future__ import annotations


import pytest

from conftest import tiny_experiment, two_class_data_toml
from encoderlab import sweep as S
from encoderlab.errors import ConfigError
from encoderlab.train.fit import fit


def _write(tmp_path, folder, sweep: str) -> str:
    return tiny_experiment(tmp_path / "exp.toml", "sw", two_class_data_toml(folder, validation=False),
                           train={"eval_every_steps": 5}, sweep=sweep)


def test_expand_grid_seeds_folds(two_class_csv, tmp_path):
    path = _write(tmp_path, two_class_csv, '"train.lr" = [1e-3, 1e-4]\n"model.head.type" = ["linear", "mlp"]\n'
                                           'seeds = [0, 1]\nfolds = 3')
    points = S.expand(path)
    assert len(points) == 2 * 2 * 2 * 3
    assert len({p.cfg.name for p in points}) == len(points)
    assert {p.cfg.group for p in points} == {"sw"}
    p = points[-1]
    assert p.cfg.train.lr == 1e-4 and p.cfg.model.head.type == "mlp" and p.cfg.train.seed == 1
    assert (p.cfg.data.folds, p.cfg.data.fold) == (3, 2)
    assert p.label == "lr=0.0001,type=mlp,seed=1,fold=2"


@pytest.mark.parametrize("sweep, message", [
    ('"train.lrr" = [1e-3]', "did you mean 'train.lr'"),
    ('"train.lr" = 1e-3', "non-empty list"),
    ('seeds = [0, "1"]', "seeds must be a list of integers"),
    ('folds = 1', "folds must be an integer >= 2"),
    ('"train.precision" = ["fp16"]', "is not one of"),
])
def test_bad_sweeps_fail_before_any_run(two_class_csv, tmp_path, sweep, message):
    with pytest.raises(ConfigError, match=message):
        S.expand(_write(tmp_path, two_class_csv, sweep))


def test_killed_sweep_continues_without_redoing_finished_runs(two_class_csv, tmp_path, store):
    path = _write(tmp_path, two_class_csv, '"train.lr" = [3e-3, 1e-3]\nseeds = [0, 1]')
    points = S.expand(path, ["data.max_train=160"])
    assert len(points) == 4
    S.run_sweep(points[:2], store, progress=False)            # two finished

    def kill(ev):
        if ev["split"] == "validation" and ev["step"] == 10:   # after the step-5 checkpoint
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):                    # third killed after a checkpoint
        fit(points[2].cfg, store, callback=kill, progress=False)
    interrupted = store.get("last")
    assert interrupted.status == "interrupted"

    def early(ev):
        if ev["split"] == "validation":                        # fourth stopped before any checkpoint
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(points[3].cfg, store, callback=early, progress=False)
    no_checkpoint = store.get("last")
    assert no_checkpoint.status == "interrupted" and not no_checkpoint.checkpoints

    assert [a for _, a, _ in S.plan(store, points)] == ["skip", "skip", "resume", "resume"]
    done = S.run_sweep(points, store, progress=False)
    assert len(done) == 4 and all(r.status == "completed" for r in done)
    assert done[2].id == interrupted.id                       # resumed, not restarted
    assert done[3].id == no_checkpoint.id                     # same folder, no interrupted leftover
    assert len(store.list(group="sw")) == 4
    assert [a for _, a, _ in S.plan(store, points)] == ["skip"] * 4
