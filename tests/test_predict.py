"""Predicting with one run or an ensemble of runs (the k fold models of a sweep): the ensemble's
probabilities are the mean of its members', and runs with other labels are refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_experiment, two_class_data_toml
from encoderlab import predict as P
from encoderlab import sweep as S
from encoderlab.cli import main
from encoderlab.errors import StoreError


@pytest.fixture(scope="module")
def fold_runs(two_class_csv, tmp_path_factory):
    """A 3-fold sweep on real glosses: three completed runs in group 'kf'."""
    from encoderlab.store.runs import RunStore
    tmp = tmp_path_factory.mktemp("kfold")
    exp = tiny_experiment(tmp / "kf.toml", "kf", two_class_data_toml(two_class_csv, validation=False),
                          encode={"max_length": 48}, sweep="folds = 3")
    store = RunStore(tmp / "runs")
    runs = S.run_sweep(S.expand(exp), store, progress=False)
    return store, runs


def test_ensemble_is_the_mean_of_its_members(fold_runs, two_class_csv):
    store, runs = fold_runs
    assert len(runs) == 3 and {r.config().data.fold for r in runs} == {0, 1, 2}
    test = str(two_class_csv / "test.csv")
    singles = [P.predict(r, test)[0] for r in runs]
    ensemble, scores = P.predict(runs, test)
    cols = ["p_noun.animal", "p_noun.artifact"]
    mean = np.mean([s[cols].to_numpy() for s in singles], axis=0)
    np.testing.assert_allclose(ensemble[cols].to_numpy(), mean, atol=2e-6)
    assert (ensemble["predicted"] == np.where(mean[:, 0] >= mean[:, 1], "noun.animal", "noun.artifact")).all()
    assert set(scores["members"]) == {r.id for r in runs} and 0 <= scores["accuracy"] <= 1


def test_ensemble_refuses_runs_with_other_labels(fold_runs, two_class_csv, tmp_path):
    store, runs = fold_runs
    other = runs[0].dir.parent / "other"
    import shutil
    shutil.copytree(runs[0].dir, other)
    meta = json.loads((other / "model" / "encoderlab.json").read_text())
    meta["labels"] = meta["labels"][::-1]
    (other / "model" / "encoderlab.json").write_text(json.dumps(meta))
    try:
        with pytest.raises(StoreError, match="has other labels than run"):
            P.predict([runs[0], store.get("other")], str(two_class_csv / "test.csv"))
    finally:
        shutil.rmtree(other)


def test_cli_predict_group_and_several_runs(fold_runs, two_class_csv, tmp_path, capsys):
    store, runs = fold_runs
    out = tmp_path / "preds.csv"
    assert main(["--store", str(store.root), "predict", "--group", "kf", str(two_class_csv / "test.csv"),
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ensemble of 3 runs (mean of their class probabilities)" in text and "single runs: accuracy" in text
    by_group = pd.read_csv(out)
    assert main(["--store", str(store.root), "predict", *[r.id for r in runs], str(two_class_csv / "test.csv")]) == 0
    captured = capsys.readouterr()
    assert "ensemble of 3 runs" in captured.err            # stdout holds only the CSV
    from io import StringIO
    pd.testing.assert_frame_equal(pd.read_csv(StringIO(captured.out)), by_group)
    assert main(["--store", str(store.root), "predict", str(two_class_csv / "test.csv")]) == 2
    assert "name the run(s) before the input file" in capsys.readouterr().err
