"""Scale-out: the Ray sweep backend against a real local Ray, checked against the local backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY_MODEL_TOML, tiny_experiment, two_class_data_toml
from test_ranking import _rank_sweep_file
from encoderlab.cli import main
from encoderlab.store.runs import RunStore


def _exp(tmp_path, folder, sweep: str = '"train.lr" = [1e-2, 1e-3]') -> str:
    return tiny_experiment(tmp_path / "exp.toml", "sw",
                           two_class_data_toml(folder, validation=False) + "\nmax_train = 160\nmax_eval = 40",
                           encode={"max_length": 32}, train={"epochs": 2}, sweep=f"{sweep}\nseeds = [0, 1, 2]")


def _compare(store, capsys) -> list[dict]:
    assert main(["--store", store, "compare", "--group", "sw", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for row in rows:
        row.pop("runs")     # run ids differ, everything else must not (means are summed in
        row.update({k: round(v, 9) for k, v in row.items() if isinstance(v, float)})  # finish order)
    return rows


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    yield ray
    if ray.is_initialized():
        ray.shutdown()


def test_ray_sweep_matches_local_sweep(ray_local, two_class_csv, tmp_path, capsys):
    exp = _exp(tmp_path, two_class_csv)
    ray_store, local_store = str(tmp_path / "ray-runs"), str(tmp_path / "local-runs")
    assert main(["--store", ray_store, "sweep", exp, "--backend", "ray", "--num-cpus", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "6 completed, 0 failed" in out
    assert main(["--store", local_store, "sweep", exp, "--quiet"]) == 0
    capsys.readouterr()

    on_ray, local = _compare(ray_store, capsys), _compare(local_store, capsys)
    assert len(on_ray) == 2 and sum(row["n"] for row in on_ray) == 6
    # same configurations, same seeds, one thread each: identical numbers, not just the same shape
    assert on_ray == local
    assert any(row["test_std"] > 0 for row in on_ray)      # seeds differ: a test that can fail
    rows = RunStore(ray_store).list(group="sw")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"completed"}
    by_name = {r["name"]: r["test_accuracy"] for r in RunStore(local_store).list(group="sw")}
    assert {r["name"]: r["test_accuracy"] for r in rows} == by_name

    # a second submission skips every finished point
    assert main(["--store", ray_store, "sweep", exp, "--backend", "ray", "--quiet"]) == 0
    assert "submitting 0 of 6 runs" in capsys.readouterr().out
    assert len(RunStore(ray_store).list(group="sw")) == 6


def test_ray_failed_task_is_a_failed_run_and_the_sweep_goes_on(ray_local, two_class_csv, tmp_path, capsys):
    # the column "nope" does not exist: those points fail reading data, before training starts
    exp = _exp(tmp_path, two_class_csv, sweep='"data.text" = ["gloss", "nope"]')
    store = str(tmp_path / "runs")
    assert main(["--store", store, "sweep", exp, "--backend", "ray", "--num-cpus", "2", "--quiet"]) == 0
    assert "3 completed, 3 failed" in capsys.readouterr().out
    rows = RunStore(store).list(group="sw")
    assert sorted(r["status"] for r in rows) == ["completed"] * 3 + ["failed"] * 3
    assert all("nope" in r["message"] for r in rows if r["status"] == "failed")
    # re-running retries only the failed points
    assert main(["--store", store, "sweep", exp, "--backend", "ray", "--quiet"]) == 0
    assert "submitting 3 of 6 runs" in capsys.readouterr().out


def test_ranking_sweep_on_ray(ray_local, senses_files, tmp_path, capsys):
    """`rank FILE --backend ray`: ranking points are Ray tasks running the ranking recipe."""
    exp = _rank_sweep_file(senses_files, tmp_path, '"ranking.mode" = ["first", "random"]\nseeds = [0, 1]')
    store = str(tmp_path / "runs")
    assert main(["--store", store, "rank", exp, "--backend", "ray", "--num-cpus", "2", "--quiet"]) == 0
    assert "submitting 4 of 4 runs" in capsys.readouterr().out
    rows = RunStore(store).list(group="rsw")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"} and {r["kind"] for r in rows} == {"ranking"}
    assert main(["--store", store, "rank", exp, "--backend", "ray", "--quiet"]) == 0
    assert "submitting 0 of 4 runs" in capsys.readouterr().out


def test_a_worker_store_view_never_opens_the_index(two_class_csv, tmp_path):
    """`RunStore(indexed=False)` (what a Ray task writes into) writes run folders and refuses the
    index; `run_point` works through it, and the driver's `reindex` makes the run visible."""
    from encoderlab import config as C
    from encoderlab import sweep as S
    from encoderlab.errors import StoreError
    points = S.expand(_exp(tmp_path, two_class_csv), ["train.epochs=1"])
    view = RunStore(tmp_path / "runs", indexed=False)
    with pytest.raises(StoreError, match="writes run folders only"):
        view.list()
    out = S.run_point(points[0].cfg, tmp_path / "runs", "start", indexed=False)
    bad = S.run_point(C.replace(points[1].cfg, **{"data.text": "nope"}), tmp_path / "runs", "start", indexed=False)
    assert bad.status == "failed" and "nope" in bad.message    # recorded, found again from the folders
    assert out.status == "completed" and not (tmp_path / "runs" / "index.sqlite").exists()
    assert S.runs_of(view, points[0].cfg) == [out.run_id]
    store = RunStore(tmp_path / "runs")
    store.reindex(out.run_id)                           # what the driver does with a handed-back folder
    assert [r["id"] for r in store.list(group="sw")] == [out.run_id]
    assert [a for _, a, _ in S.plan(store, points[:2])] == ["skip", "start"]      # the failed point starts again
    store.close()


def test_ray_sweep_ships_a_run_model_to_its_tasks(ray_local, two_class_csv, tmp_path, capsys):
    """`model.path = "run:NAME"`: the named run lives only in the driver's store; each task gets its
    folder (no checkpoints) in its scratch store, resolves the name there, and fine-tunes from it."""
    from conftest import tiny_config
    from encoderlab.scale.raysweep import run_refs
    from encoderlab.train.fit import fit
    store = RunStore(tmp_path / "runs")
    base = fit(tiny_config(two_class_csv, name="base", train__epochs=1), store, progress=False)
    store.close()
    exp = _exp(tmp_path, two_class_csv, '"train.lr" = [1e-3]')
    Path(exp).write_text(Path(exp).read_text().replace(TINY_MODEL_TOML, 'path = "run:base"\ninit = "pretrained"'))
    from encoderlab import sweep as S
    points = S.expand(exp)
    assert run_refs(points[0].cfg) == ["base"]
    assert main(["--store", str(tmp_path / "runs"), "sweep", exp, "--backend", "ray", "--num-cpus", "2",
                 "--quiet"]) == 0
    assert "3 completed, 0 failed" in capsys.readouterr().out
    rows = RunStore(tmp_path / "runs").list(group="sw")
    assert len(rows) == 3 and {r["model"] for r in rows} == {"run:base"}
    for r in rows:       # the model it started from is the base run's
        assert RunStore(tmp_path / "runs").get(r["id"]).info["model_source"].endswith(f"{base.id}/model")
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert folders == sorted([base.id] + [r["id"] for r in rows])       # the base was not handed back
