"""Label new examples with a stored run's final model, or with an ensemble of runs (k folds):
classes, label sets (multilabel, at the thresholds stored with the model) or values (regression)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from encoderlab import kinds
from encoderlab import tasks as T
from encoderlab.data.dataset import read_split, resolve_columns
from encoderlab.data.readers import read_table
from encoderlab.encode import series
from encoderlab.encode.text import encode_split
from encoderlab.errors import StoreError
from encoderlab.models import classifier
from encoderlab.store.runs import Run
from encoderlab.train.loop import pick_device, predict_logits


def _outputs(run: Run, input_path: str, frame: pd.DataFrame, *, batch_size: int, text: str | None,
             text_pair: str | None, device: str, runtime: str | None = None):
    """One run's final model on the input: its outputs (class / label probabilities (N, K), or
    values (N,)), its `tasks.Task` (labels, thresholds, target scale) and the input split.
    `runtime` (default: the run's own, set by quantize / export) serves it through
    `cost.runtime.Predictor`; runs without one use PyTorch with the run's precision."""
    folder = run.dir / "model"
    cfg = run.config()
    data_cfg = resolve_columns(replace(cfg.data, text=text or cfg.data.text,
                                       text_pair=text_pair if text_pair is not None else cfg.data.text_pair))
    runtime = runtime or run.info.get("runtime")
    if runtime:
        from encoderlab.cost.derive import logits_of
        from encoderlab.cost.runtime import Predictor
        pred = Predictor(folder, runtime)
        names = pred.meta["labels"]
        split, _ = read_split(input_path, replace(data_cfg, format="auto"), "predict", names,
                              require_labels=False, frame=frame)
        enc = encode_split(pred.tokenizer, split, pred.meta["max_length"], pred.meta["truncation"],
                           *_long(pred.meta))
        logits = logits_of(pred, enc, batch_size, pred.tokenizer.pad_token_id or 0)
        task = T.Task.from_meta(pred.meta)
        return task.outputs(logits), task, split
    model, tokenizer, meta = classifier.load(folder)
    names = meta["labels"]
    split, _ = read_split(input_path, replace(data_cfg, format="auto"), "predict", names,
                          require_labels=False, frame=frame)
    if meta.get("series"):      # raw series/images, encoded with the scheme fitted on the run's train split
        enc = series.encode(meta["series"], split, tokenizer, meta["max_length"])
    else:
        enc = encode_split(tokenizer, split, meta["max_length"], meta["truncation"], *_long(meta))
    dev = pick_device(device)
    model.to(dev)
    logits = predict_logits(model, enc, batch_size, dev, cfg.train.precision)
    task = T.Task.from_meta(meta)
    return task.outputs(logits), task, split


def _long(meta: dict) -> tuple[str, int, str]:
    """The run's long-text policy (encode.long, stride, pool) as stored with its model; models saved
    before it existed kept the head."""
    return meta.get("long", "head"), int(meta.get("stride", 0)), meta.get("pool", "mean")


def predict(run: Run | list[Run], input_path: str, *, batch_size: int = 128, text: str | None = None,
            text_pair: str | None = None, device: str = "auto",
            runtime: str | None = None) -> tuple[pd.DataFrame, dict | None]:
    """Input rows plus `predicted` and one `p_<label>` column per class (multilabel: `predicted` is
    the "a|b" label set at the run's tuned thresholds, `p_<label>` each label's probability;
    regression: `predicted` is the value). Several runs (e.g. the k fold models of a sweep) are an
    ensemble: their probabilities (values) are averaged; they must share the label set and order.
    When the input has the label column, also returns the task's scores on it (unseen labels are
    errors); for an ensemble also each member's checkpoint metric."""
    runs = run if isinstance(run, list) else [run]
    if not runs:
        raise StoreError("no runs to predict with")
    for r in runs:
        kinds.require(r, "predict")
    sequence = runs[0].info.get("task") == "sequence"
    frame = None if sequence else read_table(input_path, "auto")
    kw = {"batch_size": batch_size, "text": text, "text_pair": text_pair, "device": device, "runtime": runtime}
    out0, task, split = _outputs(runs[0], input_path, frame, **kw)
    names = task.names
    if sequence:    # numeric inputs have no table to extend: one row per example, by id
        frame = pd.DataFrame({"id": split.texts})
    members = [out0]
    for other in runs[1:]:
        p, other_task, _ = _outputs(other, input_path, frame, **kw)
        other_names = other_task.names
        if other_task.kind != task.kind or other_names != names:
            raise StoreError(f"run {other.id} has other labels than run {runs[0].id} "
                             f"({len(other_names)} vs {len(names)}, or another order); an ensemble "
                             "averages probabilities of the same classes")
        members.append(p)
    mean = np.mean(members, axis=0)
    out = frame.copy()
    for col, values in task.columns(mean).items():
        out[col] = values
    scores = None
    if split.labelled:
        scores = task.score_outputs(mean, split.labels)
        if len(runs) > 1:
            key = T.DEFAULT_METRIC[task.kind]
            scores["members"] = {r.id: task.score_outputs(p, split.labels)[key] for r, p in zip(runs, members)}
    return out, scores


def write(df: pd.DataFrame, path: str) -> None:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        df.to_parquet(p, index=False)
    elif suffix in (".jsonl", ".json"):
        df.to_json(p, orient="records", lines=True, force_ascii=False)
    else:
        df.to_csv(p, index=False, sep="\t" if suffix in (".tsv", ".tab") else ",")

