"""End to end through the CLI: run -> runs -> show -> predict, and clean errors for bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import tiny_experiment, two_class_data_toml
from encoderlab.cli import build_parser, main


@pytest.fixture
def exp_file(two_class_csv, tmp_path):
    path = tmp_path / "exp.toml"
    tiny_experiment(path, "cli-e2e", two_class_data_toml(two_class_csv), encode={"max_length": 48},
                    train={"epochs": 2})
    return path


def test_run_runs_show_predict(exp_file, two_class_csv, tmp_path, capsys):
    store = str(tmp_path / "runs")
    assert main(["--store", store, "run", exp_file.as_posix(), "train.lr=2e-3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "majority-class baseline" in out and "encoderlab show" in out

    assert main(["--store", store, "runs", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["name"] == "cli-e2e"
    run_id = rows[0]["id"]

    assert main(["--store", store, "runs", "--name", "nothing*", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

    assert main(["--store", store, "show", run_id, "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "train.lr = 0.002" in out      # the config's differences from defaults, override applied
    assert "val acc" in out and "noun.animal" in out

    assert main(["--store", store, "show", run_id, "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["epoch"] for r in shown["epochs"]] == [1.0, 2.0]
    assert 0.0 <= shown["final"]["test"]["accuracy"] <= 1.0

    preds = tmp_path / "preds.csv"
    assert main(["--store", store, "predict", run_id[-4:], str(two_class_csv / "test.csv"), "-o", str(preds)]) == 0
    assert "accuracy" in capsys.readouterr().out
    df = pd.read_csv(preds)
    assert list(df.columns) == ["gloss", "category", "predicted", "p_noun.animal", "p_noun.artifact"]
    assert ((df["p_noun.animal"] + df["p_noun.artifact"]).round(4) == 1).all()
    # same predictions as the run's own stored test predictions
    stored = pd.read_csv(tmp_path / "runs" / run_id / "predictions" / "test.csv")
    assert (stored["predicted"] == df["predicted"]).all()

    # unlabelled input with a different column name
    pd.DataFrame({"definition": ["a domesticated carnivorous mammal", "a device for cutting"]}).to_csv(
        tmp_path / "new.csv", index=False)
    assert main(["--store", store, "predict", run_id, str(tmp_path / "new.csv"), "--text", "definition",
                 "-o", str(tmp_path / "new_preds.jsonl")]) == 0
    assert len(pd.read_json(tmp_path / "new_preds.jsonl", lines=True)) == 2


@pytest.mark.parametrize("args, message", [
    (["train.lrr=1e-5"], "did you mean 'train.lr'"),
    (["train.epochs=two"], "train.epochs: expected integer"),
    (["model.init=randm"], "did you mean 'random'"),
    (["data.text=sentence"], "column 'sentence' not found"),
])
def test_bad_config_is_one_clear_line(exp_file, tmp_path, capsys, args, message):
    code = main(["--store", str(tmp_path / "runs"), "run", str(exp_file), *args, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_unseen_label_in_validation_names_file_row_field(exp_file, two_class_csv, tmp_path, capsys):
    bad = tmp_path / "val.csv"
    df = pd.read_csv(two_class_csv / "validation.csv")
    df.loc[3, "category"] = "noun.plant"
    df.to_csv(bad, index=False)
    code = main(["--store", str(tmp_path / "runs"), "run", str(exp_file), f'data.validation="{bad}"', "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(bad) in err and "row 4" in err and "'category'" in err and "noun.plant" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/run.json"))


def test_config_reference_and_help(capsys):
    assert main(["config", "--reference"]) == 0
    out = capsys.readouterr().out
    assert "`train.lr`" in out and "`model.head.type`" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "Example:" in capsys.readouterr().out


def test_eval_checkpoints_and_lrfind_through_cli(exp_file, tmp_path, capsys):
    store = str(tmp_path / "runs")
    assert main(["--store", store, "run", str(exp_file), "train.eval_every_steps=10",
                 "train.keep_final_checkpoints=true", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["--store", store, "eval", "last", "--split", "test", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 2 and any(r["note"].startswith("best") for r in rows)
    assert main(["--store", store, "compare", "last", "--checkpoints", "--format", "csv"]) == 0
    assert "eval:test/accuracy" in capsys.readouterr().out
    out = tmp_path / "lr"
    assert main(["--store", store, "lrfind", str(exp_file), "--steps", "30", "--out", str(out)]) == 0
    assert "train.lr=" in capsys.readouterr().out and (out / "lrfind.png").exists()


def test_every_verb_help_renders_with_an_example(capsys):
    """argparse formats help lazily: a stray '%' in one verb's help broke `encoderlab --help`."""
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    verbs = [a for a in build_parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict)][0]
    for name, sub in verbs.choices.items():
        assert "Example" in sub.format_help(), name
