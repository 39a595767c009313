"""MLflow and TensorBoard mirrors of a run, read back with the trackers' own readers."""

from __future__ import annotations

import pytest

from conftest import tiny_config
from encoderlab import config as C
from encoderlab.errors import ConfigError
from encoderlab.train.fit import fit


def test_mlflow_and_tensorboard_get_params_metrics_and_model(two_class_csv, store):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(two_class_csv, name="tracked", group="trk", tracking=["mlflow", "tensorboard"],
                      **{"train.epochs": 2, "data.max_train": 96})
    run = fit(cfg, store, progress=False)
    assert run.status == "completed"

    client = MlflowClient(f"sqlite:///{store.root.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("trk")
    (mr,) = client.search_runs([exp.experiment_id])
    assert mr.info.status == "FINISHED" and mr.data.tags["encoderlab.run_id"] == run.id
    assert mr.data.params["train.lr"] == str(cfg.train.lr) and mr.data.params["model.hidden_size"] == "16"
    val_acc = [m.value for m in client.get_metric_history(mr.info.run_id, "validation_accuracy")]
    stored = [e["metrics"]["accuracy"] for e in run.events() if e["split"] == "validation"]
    assert val_acc == pytest.approx(stored) and len(stored) == 2
    assert mr.data.metrics["test_accuracy"] == pytest.approx(run.info["test_accuracy"])
    artifacts = {f.path for f in client.list_artifacts(mr.info.run_id, "model")}
    assert "model/model.safetensors" in artifacts and "model/config.json" in artifacts

    acc = EventAccumulator(str(store.root / "tensorboard" / run.id))
    acc.Reload()
    assert {"train/loss", "validation/accuracy", "test/accuracy"} <= set(acc.Tags()["scalars"])
    assert [e.value for e in acc.Scalars("validation/accuracy")] == pytest.approx(stored)


def test_tracking_is_not_part_of_the_config_hash_and_names_are_checked(two_class_csv):
    plain = tiny_config(two_class_csv)
    assert C.config_hash(plain) == C.config_hash(C.replace(plain, tracking=["mlflow"]))
    with pytest.raises(ConfigError, match="'mlfow' is not one of mlflow, tensorboard; did you mean 'mlflow'"):
        tiny_config(two_class_csv, tracking=["mlfow"])


def test_a_broken_tracker_warns_and_the_run_completes(two_class_csv, store, capsys):
    pytest.importorskip("mlflow")
    cfg = tiny_config(two_class_csv, tracking=["mlflow"], tracking_uri="nosuchscheme://x",
                      **{"train.epochs": 1, "data.max_train": 64})
    run = fit(cfg, store, progress=False)
    assert run.status == "completed"
    assert "mlflow tracking switched off" in capsys.readouterr().err
