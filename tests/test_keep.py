"""`store gc --models`: a group keeps the final weights of its best configurations by validation only;
the others keep everything but their weights, and the verbs that need weights say why they are gone."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import tiny_experiment, two_class_data_toml
from encoderlab import sweep as S
from encoderlab.analysis.facts import read_facts
from encoderlab.cli import main
from encoderlab.errors import ConfigError
from encoderlab.store import space
from encoderlab.store.runs import RunStore


@pytest.fixture
def grid(two_class_csv, tmp_path):
    """3 learning rates x 2 seeds on real glosses (6 completed runs in group 'kg')."""
    path = tiny_experiment(tmp_path / "kg.toml", "kg", two_class_data_toml(two_class_csv) + "\nmax_train = 96",
                           encode={"max_length": 32}, train={"eval_every_steps": 3},
                           sweep='"train.lr" = [1e-2, 3e-3, 1e-9]\nseeds = [0, 1]')
    store = RunStore(tmp_path / "runs")
    runs = S.run_sweep(S.expand(path), store, progress=False)
    assert [r.status for r in runs] == ["completed"] * 6
    return store, runs


def _by_lr(runs) -> dict[float, list]:
    out: dict[float, list] = {}
    for f in read_facts(runs):
        out.setdefault(f.flat["train.lr"], []).append(f)
    return out


def test_the_best_configurations_by_validation_keep_their_weights(grid, two_class_csv, tmp_path, capsys):
    store, runs = grid
    root = str(store.root)
    # the ranking by hand: mean over seeds of each run's best validation accuracy
    means = {lr: sum(f.best_val("accuracy") for f in fs) / len(fs) for lr, fs in _by_lr(runs).items()}
    best = max(means, key=means.get)
    assert main(["--store", root, "store", "gc", "--models", "--group", "kg", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and {r["decision"] for r in rows} == {"keep", "remove"}
    lr_of = {f.id: f.flat["train.lr"] for f in read_facts(runs)}
    for r in rows:
        assert r["value"] == pytest.approx(means[lr_of[r["run"]]])
        assert (r["decision"] == "keep") == (lr_of[r["run"]] == best)
        assert r["rank"] == 1 + sorted(means.values(), reverse=True).index(means[lr_of[r["run"]]])
    assert all(space.weight_files(r.dir) for r in runs), "a dry run deletes nothing"

    assert main(["--store", root, "store", "gc", "--models", "--group", "kg", "--apply"]) == 0
    out = capsys.readouterr().out
    assert "removed the weights of 4 run(s)" in out and "best 1 configuration(s) by validation accuracy" in out
    kept = [r for r in runs if lr_of[r.id] == best]
    gone = [r for r in runs if lr_of[r.id] != best]
    assert all(space.weight_files(r.dir) for r in kept)
    for r in gone:
        assert not space.weight_files(r.dir)
        assert (r.dir / "metrics.jsonl").stat().st_size and (r.dir / "predictions").is_dir()
        note = json.loads((r.dir / "model" / space.REMOVED_FILE).read_text())
        assert "ranked" in note["reason"] and note["files"]

    # the group still reads as before: all 3 configurations in compare, from metrics alone
    assert main(["--store", root, "compare", "--group", "kg", "--format", "json"]) == 0
    table, _ = json.JSONDecoder().raw_decode(capsys.readouterr().out)   # the configuration table comes first
    assert len(table) == 3
    # the verbs that need weights say what happened; the kept runs still predict
    pd.read_csv(two_class_csv / "test.csv").head(5).drop(columns="category").to_csv(tmp_path / "in.csv", index=False)
    assert main(["--store", root, "predict", gone[0].id, str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv")]) != 0
    assert "had its model weights removed by `encoderlab store gc --models`" in capsys.readouterr().err
    assert main(["--store", root, "predict", kept[0].id, str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv")]) == 0
    from encoderlab.models.registry import resolve
    with pytest.raises(ConfigError, match="had its model weights removed"):
        resolve(f"run:{gone[0].id}", root)
    # a second pass has nothing left to remove
    capsys.readouterr()
    assert main(["--store", root, "store", "gc", "--models", "--group", "kg", "--apply"]) == 0
    assert "removed the weights of 0 run(s)" in capsys.readouterr().out


def test_gc_models_needs_a_group(grid, capsys):
    store, _ = grid
    assert main(["--store", str(store.root), "store", "gc", "--models"]) != 0
    assert "--group" in capsys.readouterr().err


@pytest.mark.parametrize("search", [False, True])
def test_sweep_keep_models_prunes_weights_once_the_group_is_done(two_class_csv, tmp_path, capsys, search):
    """`[sweep] keep_models = 1` on a plain sweep and on a search: the command ends by keeping the
    best configuration's weights only, the same decision `store gc --models` makes."""
    spec = ('search = "grid"\npruner = "none"\n"train.lr" = { log_uniform = [1e-9, 1e-2], grid = 2 }' if search
            else '"train.lr" = [1e-2, 1e-9]')
    path = tiny_experiment(tmp_path / "km.toml", "km", two_class_data_toml(two_class_csv) + "\nmax_train = 64",
                           encode={"max_length": 32}, sweep=f"{spec}\nseeds = [0, 1]\nkeep_models = 1")
    root = str(tmp_path / "runs")
    assert main(["--store", root, "sweep", path, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "[sweep] keep_models = 1: kept the models of the best 1 configuration(s)" in out
    assert "removed the weights of 2 run(s)" in out
    store = RunStore(root)
    runs = [store.get(r["id"]) for r in store.list(group="km")]
    kept = {f.flat["train.lr"] for f in read_facts(runs) if space.weight_files(f.run.dir)}
    assert kept == {0.01} and len(runs) == 4
    assert main(["--store", root, "sweep", path, "--quiet"]) == 0      # all done: nothing left to remove
    assert "removed the weights of 0 run(s)" in capsys.readouterr().out


def test_keep_models_must_be_a_count(two_class_csv, tmp_path):
    path = tiny_experiment(tmp_path / "km.toml", "km", two_class_data_toml(two_class_csv),
                           sweep='"train.lr" = [1e-2]\nkeep_models = "best"')
    with pytest.raises(ConfigError, match="keep_models must be an integer >= 0"):
        S.expand(path)
