"""Mirror a run into the dashboards users already keep: MLflow and TensorBoard (optional extras).

`tracking = ["mlflow", "tensorboard"]` in the experiment file. The run store stays the source of
truth: a tracker that cannot be imported or fails while logging prints one warning and is switched
off; it never stops the run.

    MLflow       experiment = the run's group (or name); params = the flattened config; metrics
                 `<split>_<name>` per evaluation; the final model folder as artifact `model/`;
                 tag `encoderlab.run_id`. Default backend: sqlite:///<store>/mlflow.db.
    TensorBoard  scalars `<split>/<name>` in <store>/tensorboard/<run-id>/."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from encoderlab import config as C


def _warn(name: str, e: Exception) -> None:
    print(f"warning: {name} tracking switched off: {type(e).__name__}: {e}", file=sys.stderr)


class _MLflow:
    def __init__(self, cfg: C.ExperimentConfig, run, root: Path):
        import mlflow
        from mlflow.tracking import MlflowClient
        for name in ("mlflow", "alembic"):     # table creation chatter on the first use of a store
            logging.getLogger(name).setLevel(logging.WARNING)
        uri = cfg.tracking_uri or f"sqlite:///{root.resolve() / 'mlflow.db'}"
        self.client = MlflowClient(uri)
        exp_name = cfg.group or cfg.name
        exp = self.client.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            exp_name, artifact_location=(root.resolve() / "mlartifacts").as_uri() if not cfg.tracking_uri else None)
        self.id = self.client.create_run(exp_id, run_name=cfg.name, tags={"encoderlab.run_id": run.id}).info.run_id
        params = C.flatten(C.to_dict(cfg))
        self.client.log_batch(self.id, params=[mlflow.entities.Param(k, str(v)[:500]) for k, v in params.items()])
        self._entities = mlflow.entities

    def log(self, event: dict) -> None:
        ts = int(__import__("time").time() * 1000)
        metrics = [self._entities.Metric(f"{event['split']}_{k}", float(v), ts, int(event.get("step") or 0))
                   for k, v in event.get("metrics", {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if metrics:
            self.client.log_batch(self.id, metrics=metrics)

    def finish(self, run, status: str) -> None:
        if status == "completed" and (run.dir / "model").is_dir():
            self.client.log_artifacts(self.id, str(run.dir / "model"), "model")
        self.client.set_terminated(self.id, {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))


class _TensorBoard:
    def __init__(self, cfg: C.ExperimentConfig, run, root: Path):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(root / "tensorboard" / run.id))

    def log(self, event: dict) -> None:
        for k, v in event.get("metrics", {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{event['split']}/{k}", float(v), int(event.get("step") or 0))
        self.writer.flush()

    def finish(self, run, status: str) -> None:
        self.writer.close()


KINDS = {"mlflow": _MLflow, "tensorboard": _TensorBoard}


class Trackers:
    """The trackers of one run; every call is guarded so a broken tracker only warns."""

    def __init__(self, cfg: C.ExperimentConfig, run, root: Path):
        self.live = {}
        for name in cfg.tracking:
            try:
                self.live[name] = KINDS[name](cfg, run, Path(root))
            except Exception as e:
                _warn(name, e)

    def _each(self, method: str, *args) -> None:
        for name, t in list(self.live.items()):
            try:
                getattr(t, method)(*args)
            except Exception as e:
                _warn(name, e)
                del self.live[name]

    def log(self, event: dict) -> None:
        self._each("log", event)

    def finish(self, run, status: str) -> None:
        self._each("finish", run, status)
