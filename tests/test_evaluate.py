"""Re-evaluating a run's stored checkpoints: one event per checkpoint, in file and index, no duplicates."""

from __future__ import annotations

import pytest

from conftest import tiny_config
from encoderlab.analysis.tables import epoch_table, final_scores
from encoderlab.errors import StoreError
from encoderlab.evaluate import eval_checkpoints
from encoderlab.train.fit import fit


@pytest.fixture(scope="module")
def trained(two_class_csv, tmp_path_factory):
    """2 epochs x 25 steps, validated every 10 steps and at epoch ends: 6 evaluations, 5 kept + best."""
    from encoderlab.store.runs import RunStore
    store = RunStore(tmp_path_factory.mktemp("eval") / "runs")
    cfg = tiny_config(two_class_csv, train__epochs=2, train__eval_every_steps=10, train__keep_checkpoints=5,
                      train__keep_final_checkpoints=True)
    run = fit(cfg, store, progress=False)
    yield store, run
    store.close()


def _events(run, split):
    return [e for e in run.events() if e["split"] == split]


def test_all_checkpoints_on_test_once_each(trained):
    store, run = trained
    steps = [int(p.name[5:]) for p in run.checkpoints]
    assert len(steps) >= 3
    rows = eval_checkpoints(run, "test", progress=False)
    assert [r["step"] for r in rows] == steps and all(r["logged"] for r in rows)
    events = _events(run, "eval:test")
    assert [e["step"] for e in events] == steps
    for e in events:
        assert set(e["metrics"]) == {"loss", "accuracy", "macro_f1"}
        assert e["detail"]["checkpoint"] == f"step-{e['step']}"
        assert set(e["detail"]["per_class"]) == {"noun.animal", "noun.artifact"}
    # epochs line up with the run's own validation events of the same steps
    val_epoch = {r["step"]: r["epoch"] for r in epoch_table(run)}
    for r in rows:
        assert r["epoch"] == pytest.approx(val_epoch[r["step"]])

    # the best checkpoint re-scored on test is exactly the run's own final test score
    test = final_scores(run)["test"]
    best = [r for r in rows if r["best"]]
    assert len(best) == 1 and best[0]["checkpoint"] == test["checkpoint"]
    assert best[0]["accuracy"] == test["accuracy"]
    assert best[0]["loss"] == pytest.approx(test["loss"], rel=1e-6)

    # the index holds the rows (3 metrics per checkpoint), also after a rebuild from the folders
    idx = store.metrics(run.id, "eval:test")
    assert len(idx) == 3 * len(steps)
    assert {(m["step"], m["value"]) for m in idx if m["name"] == "accuracy"} == \
        {(r["step"], r["accuracy"]) for r in rows}
    store.rebuild()
    assert len(store.metrics(run.id, "eval:test")) == 3 * len(steps)
    # the run's own tables ignore these events
    assert final_scores(run)["test"] == test

    # again: nothing new, the same numbers come back
    again = eval_checkpoints(run, "test", progress=False)
    assert not any(r["logged"] for r in again)
    assert [(r["step"], r["accuracy"]) for r in again] == [(r["step"], r["accuracy"]) for r in rows]
    assert len(_events(run, "eval:test")) == len(steps)
    assert len(store.metrics(run.id, "eval:test")) == 3 * len(steps)

    # force: evaluated and logged again
    forced = eval_checkpoints(run, "test", which="best", progress=False, force=True)
    assert [r["logged"] for r in forced] == [True]
    assert len(_events(run, "eval:test")) == len(steps) + 1
    assert len(store.metrics(run.id, "eval:test")) == 3 * (len(steps) + 1)


def test_choosing_checkpoints_on_validation(trained):
    store, run = trained
    steps = [int(p.name[5:]) for p in run.checkpoints]
    best = final_scores(run)["final_validation"]
    rows = eval_checkpoints(run, "validation", which="best", progress=False)
    assert [r["checkpoint"] for r in rows] == [best["checkpoint"]]
    assert rows[0]["accuracy"] == best["accuracy"]
    assert [r["step"] for r in eval_checkpoints(run, "validation", which="last", progress=False)] == [steps[-1]]
    rows = eval_checkpoints(run, "validation", which=[f"step-{steps[1]}", steps[0], str(steps[0])],
                            progress=False)
    assert [r["step"] for r in rows] == steps[:2]
    # every checkpoint evaluated on validation so far was logged exactly once
    logged = [e["step"] for e in _events(run, "eval:validation")]
    assert sorted(logged) == sorted(set(logged))

    with pytest.raises(StoreError, match="no checkpoint step-7 .*checkpoints: step-"):
        eval_checkpoints(run, "validation", which=[7], progress=False)
    with pytest.raises(StoreError, match="'newest' is not all, best, last or a step number"):
        eval_checkpoints(run, "validation", which="newest", progress=False)
    with pytest.raises(StoreError, match="choose one of validation, test"):
        eval_checkpoints(run, "train", progress=False)


def test_a_run_without_checkpoints_is_a_clear_error(store, two_class_csv):
    run = store.create(tiny_config(two_class_csv), ["noun.animal", "noun.artifact"])
    with pytest.raises(StoreError, match=f"run {run.id} has no checkpoints to evaluate"):
        eval_checkpoints(run, "test", progress=False)
    assert run.events() == []
