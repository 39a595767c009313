"""What differs between task kinds, in one small piece per kind, so the fit loop stays one loop.

A task turns (logits, labels) into a loss, scores a labelled split, picks its default checkpoint
metric, writes prediction files and says what its model needs stored beside it:

* classification (data.task single / pair / sequence): softmax + cross-entropy; accuracy.
* multilabel: one sigmoid per label + binary cross-entropy (optional pos_weight); per-label
  thresholds tuned on validation at the end of a run (and one global), stored with the model.
* regression: a one-unit head + MSE or Huber on (optionally) standardised targets; the train
  mean / std travel with the model, predictions are on the original scale.

`for_run(cfg_task, ...)` gives the `Task` of a run; `Task.meta()` is what `classifier.save` writes
into encoderlab.json and `Task.from_meta` reads back for predict."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from encoderlab import metrics as M

CLASSIFICATION_TASKS = ("single", "pair", "sequence")
DEFAULT_METRIC, LOWER_IS_BETTER, resolve_metric = M.DEFAULT_METRIC, M.LOWER_IS_BETTER, M.resolve_metric
family = M.task_family
# the scalar metrics of each task's validation / test events, the checkpoint metric among them
EVENT_METRICS = {"classification": ("loss", "accuracy", "macro_f1"),
                 "multilabel": ("loss", "micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss"),
                 "regression": ("loss", "rmse", "mae", "pearson", "spearman")}
# the running train score of each task's train events (regression has none)
RUNNING_METRIC = {"classification": "accuracy", "multilabel": "subset_accuracy"}
MAX_POS_WEIGHT = 10.0   # a label seen once in train must not get a weight of thousands


def better(metric: str, value: float, best: float | None) -> bool:
    if best is None or (np.isnan(best) and not np.isnan(value)):
        return True     # a first evaluation, or one beating a NaN (a constant regression prediction)
    return value < best if metric in LOWER_IS_BETTER else value > best


def pos_weight(labels: np.ndarray) -> torch.Tensor:
    """(L,) negatives / positives of each label in train, capped at MAX_POS_WEIGHT."""
    pos = labels.sum(0)
    return torch.from_numpy(np.clip((len(labels) - pos) / np.maximum(pos, 1), 1.0, MAX_POS_WEIGHT)
                            .astype(np.float32))


@dataclass
class Task:
    """One run's task: how it scores, what its loss is, what its model keeps."""
    kind: str                                   # classification | multilabel | regression
    names: list[str]                            # class / label names; regression: [target column]
    weights: torch.Tensor | None = None         # classification: class weights; multilabel: pos_weight
    label_smoothing: float = 0.0
    regression_loss: str = "mse"
    target: dict | None = None                  # regression: {"mean", "std"} of train targets
    thresholds: list[float] | None = None       # multilabel: per label, tuned on validation
    global_threshold: float = 0.5
    extra: dict = field(default_factory=dict)

    # -- loss -------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, labels: torch.Tensor, smooth: bool = True) -> torch.Tensor:
        """(B, K) logits and the batch's labels -> scalar loss (what the model's forward returns);
        evaluation passes smooth=False (validation loss without label smoothing)."""
        w = None if self.weights is None else self.weights.to(logits.device)
        if self.kind == "multilabel":         # labels (B, L) 0/1
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=w)
        if self.kind == "regression":         # labels (B,) on the training scale
            pred = logits[:, 0]
            if self.regression_loss == "huber":
                return nn.functional.huber_loss(pred, labels.float(), delta=1.0)
            return nn.functional.mse_loss(pred, labels.float())
        return nn.functional.cross_entropy(logits, labels, weight=w,
                                           label_smoothing=self.label_smoothing if smooth else 0.0)

    # -- labels on the training scale ---------------------------------------------------------
    def train_labels(self, labels: np.ndarray) -> np.ndarray:
        """What the loss sees: regression targets standardised when the run does; else as read."""
        if self.kind == "regression" and self.target:
            return ((labels - self.target["mean"]) / self.target["std"]).astype(np.float32)
        return labels

    def values(self, logits: np.ndarray) -> np.ndarray:
        """Regression predictions on the original scale, (N,)."""
        v = logits[:, 0].astype(np.float64)
        return v * self.target["std"] + self.target["mean"] if self.target else v

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(logits)
        return (torch.sigmoid(t) if self.kind == "multilabel" else torch.softmax(t, 1)).numpy()

    def cut(self) -> np.ndarray:
        """(L,) the decision threshold of each label."""
        return np.asarray(self.thresholds if self.thresholds else [self.global_threshold] * len(self.names))

    def running_hits(self, logits: torch.Tensor, labels: torch.Tensor) -> int:
        """Train-time running score numerator: right classes, or exactly right label sets; 0 for regression."""
        if self.kind == "classification":
            return int((logits.argmax(1) == labels).sum())
        if self.kind == "multilabel":
            return int(((logits > 0) == (labels > 0.5)).all(1).sum())
        return 0

    # -- scores ---------------------------------------------------------------------------------
    def outputs(self, logits: np.ndarray) -> np.ndarray:
        """What a model's logits mean: class / label probabilities, or values on the original scale
        (what an ensemble averages)."""
        return self.values(logits) if self.kind == "regression" else self.probabilities(logits)

    def score_outputs(self, out: np.ndarray, labels: np.ndarray) -> dict:
        """Every metric (scalars plus detail) of outputs against the labels as read."""
        if self.kind == "multilabel":
            return M.multilabel(labels, out >= self.cut(), self.names)
        if self.kind == "regression":
            return M.regression(labels, out)
        return M.classification(labels, out.argmax(1), self.names)

    def scores(self, logits: np.ndarray, labels: np.ndarray, loss: float) -> dict:
        return {"loss": loss, **self.score_outputs(self.outputs(logits), labels)}

    def event(self, scores: dict) -> tuple[dict, dict]:
        """(metrics, detail) of a validation / test event."""
        metrics = {k: scores[k] for k in EVENT_METRICS[self.kind] if k in scores}
        detail_keys = {"classification": ("per_class", "predicted_share"),
                       "multilabel": ("per_label", "label_share_predicted", "label_share_true",
                                      "cardinality_predicted", "cardinality_true", "empty_predicted"),
                       "regression": ("prediction_mean", "prediction_std", "target_mean", "target_std")}[self.kind]
        return metrics, {k: scores[k] for k in detail_keys if k in scores}

    # -- thresholds -----------------------------------------------------------------------------
    def tune(self, logits: np.ndarray, labels: np.ndarray) -> dict:
        """Multilabel: the global threshold maximising micro-F1, then each label's own, moved from
        the global one only where that raises micro-F1 (one pass over the labels, given the others).
        Tuning each label for its own F1 instead would switch weak labels always on (always
        predicting a label of prevalence p has F1 2p / (1 + p) > 0), flooding every example."""
        if self.kind != "multilabel":
            return {}
        probs = self.probabilities(logits)
        y = labels > 0.5
        grid = np.round(np.arange(0.05, 0.951, 0.05), 2)

        def counts(pred):   # (L,) tp, fp, fn
            return (y & pred).sum(0), (~y & pred).sum(0), (y & ~pred).sum(0)

        micro = [float(M.f1_counts(*(c.sum() for c in counts(probs >= t)))) for t in grid]
        g = float(grid[int(np.argmax(micro))])
        per = np.full(len(self.names), g)
        tp, fp, fn = counts(probs >= per)
        best = float(M.f1_counts(tp.sum(), fp.sum(), fn.sum()))
        for j in range(len(self.names)):
            rest = tp.sum() - tp[j], fp.sum() - fp[j], fn.sum() - fn[j]
            for t in grid:
                p, yj = probs[:, j] >= t, y[:, j]
                cj = (yj & p).sum(), (~yj & p).sum(), (yj & ~p).sum()
                f = float(M.f1_counts(rest[0] + cj[0], rest[1] + cj[1], rest[2] + cj[2]))
                if f > best + 1e-12:
                    best, per[j] = f, float(t)
                    tp[j], fp[j], fn[j] = cj
        self.global_threshold, self.thresholds = g, [float(t) for t in per]
        return {"global_threshold": g, "thresholds": dict(zip(self.names, self.thresholds)),
                "micro_f1_at_0.5": float(M.f1_counts(*(c.sum() for c in counts(probs >= 0.5)))),
                "micro_f1_at_global": float(max(micro)), "micro_f1_tuned": best}

    # -- what the model keeps ---------------------------------------------------------------------
    def meta(self) -> dict:
        out: dict = {"task_kind": self.kind}
        if self.kind == "multilabel":
            out.update(global_threshold=self.global_threshold, thresholds=self.thresholds)
        if self.kind == "regression":
            out["target"] = self.target
        return out

    @classmethod
    def from_meta(cls, meta: dict) -> "Task":
        kind = meta.get("task_kind") or family(meta.get("task", "single"))
        return cls(kind, list(meta["labels"]), target=meta.get("target"), thresholds=meta.get("thresholds"),
                   global_threshold=meta.get("global_threshold", 0.5))

    # -- predictions ------------------------------------------------------------------------------
    def prediction_columns(self, logits: np.ndarray) -> dict[str, list]:
        return self.columns(self.outputs(logits))

    def columns(self, out: np.ndarray) -> dict[str, list]:
        """Columns added to a predictions table from outputs: predicted (class, "a|b" label set or
        value) and per-class / per-label probabilities."""
        if self.kind == "regression":
            return {"predicted": np.round(out, 6).tolist()}
        if self.kind == "multilabel":
            cols = {"predicted": ["|".join(n for n, o in zip(self.names, row) if o) for row in out >= self.cut()]}
        else:
            cols = {"predicted": [self.names[i] for i in out.argmax(1)]}
        cols.update({f"p_{n}": out[:, j].astype(np.float64).round(6).tolist() for j, n in enumerate(self.names)})
        return cols

    def gold_column(self, labels: np.ndarray, labelled: bool = True) -> list:
        if not labelled:
            return [""] * len(labels)
        if self.kind == "regression":
            return [round(float(v), 6) for v in labels]
        if self.kind == "multilabel":
            return ["|".join(n for n, o in zip(self.names, row) if o > 0.5) for row in labels]
        return [self.names[i] if i >= 0 else "" for i in labels]


def for_run(task: str, names: list[str], train_labels: np.ndarray, tc) -> Task:
    """The Task of a new (or resumed) run from its data.task, labels and [train] settings."""
    kind = family(task)
    if kind == "multilabel":
        return Task(kind, names, weights=pos_weight(train_labels) if tc.class_weights == "balanced" else None)
    if kind == "regression":
        target = None
        if tc.standardize_targets:
            std = float(np.std(train_labels))
            target = {"mean": float(np.mean(train_labels)), "std": std if std > 0 else 1.0}
        return Task(kind, names, regression_loss=tc.regression_loss, target=target)
    weights = None
    if tc.class_weights == "balanced":
        counts = np.bincount(train_labels, minlength=len(names)).astype(np.float32)
        weights = torch.from_numpy(len(train_labels) / (len(names) * np.maximum(counts, 1)))
    return Task(kind, names, weights=weights, label_smoothing=tc.label_smoothing)


def baseline(task: Task, train: np.ndarray, splits: dict[str, np.ndarray]) -> dict:
    """The task's trivial baseline on each split: multilabel = always the labels frequent in train
    (the top-k by train frequency, k maximising train micro-F1); regression = always the train mean.
    (Classification keeps its majority class in the data summary.)"""
    if task.kind == "multilabel":
        freq = train.mean(0)
        order = np.argsort(-freq, kind="stable")
        best_k, best = 1, -1.0
        for k in range(1, len(order) + 1):
            pred = np.zeros(train.shape[1], bool)
            pred[order[:k]] = True
            f = M.multilabel(train, np.broadcast_to(pred, train.shape), task.names)["micro_f1"]
            if f > best:
                best_k, best = k, f
        pred = np.zeros(train.shape[1], bool)
        pred[order[:best_k]] = True
        out = {"method": "train-frequent labels", "labels": [task.names[i] for i in order[:best_k]]}
        for s, y in splits.items():
            sc = M.multilabel(y, np.broadcast_to(pred, y.shape), task.names)
            out[s] = {k: sc[k] for k in EVENT_METRICS["multilabel"] if k in sc}
        return out
    if task.kind == "regression":
        mean = float(np.mean(train))
        out = {"method": "train mean", "value": mean}
        for s, y in splits.items():
            out[s] = {"rmse": float(np.sqrt(np.mean((y - mean) ** 2))), "mae": float(np.mean(np.abs(y - mean)))}
        return out
    return {}


SHORT = {"accuracy": "accuracy", "macro_f1": "macro-F1", "micro_f1": "micro-F1", "samples_f1": "samples-F1",
         "subset_accuracy": "subset accuracy", "hamming_loss": "Hamming loss", "rmse": "RMSE", "mae": "MAE",
         "pearson": "Pearson", "spearman": "Spearman"}


def score_line(scores: dict, first: bool = False) -> str:
    """"accuracy 0.8123, macro-F1 0.7001" from whichever task's scalar scores are in `scores`
    (`first`: only the name of the leading one, e.g. for the per-member range of an ensemble)."""
    kind = "multilabel" if "micro_f1" in scores else "regression" if "spearman" in scores or "rmse" in scores \
        else "classification"
    keys = [k for k in EVENT_METRICS[kind] if k != "loss" and isinstance(scores.get(k), float)]
    if first:
        return SHORT[DEFAULT_METRIC[kind]]
    return ", ".join(f"{SHORT[k]} {scores[k]:.4f}" for k in keys)


def metric_for_runs(runs) -> str:
    """The metric `compare` shows when none is asked for: the task's default when all runs share
    one task family, else accuracy."""
    fams = {family((r if isinstance(r, dict) else r.info).get("task") or "") for r in runs}
    return DEFAULT_METRIC[fams.pop()] if len(fams) == 1 else "accuracy"


def metric_of(cfg) -> str:
    """The metric a run of `cfg` picks its best checkpoint by: train.metric, "auto" resolved for the
    task (a builtin dataset's task counts when data.task is auto)."""
    task = cfg.data.task
    if task == "auto" and cfg.data.source.startswith("builtin:"):
        from encoderlab.data import builtin
        task = builtin.get(cfg.data.source.removeprefix("builtin:")).task
    return resolve_metric(cfg.train.metric, task)
