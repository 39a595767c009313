"""Label new examples with a stored run's final model, or with an ensemble of runs (k folds)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from encoderlab import kinds
from encoderlab import metrics as M
from encoderlab.data.dataset import read_split, resolve_columns
from encoderlab.data.readers import read_table
from encoderlab.encode import series
from encoderlab.encode.text import encode_split
from encoderlab.errors import StoreError
from encoderlab.models import classifier
from encoderlab.store.runs import Run
from encoderlab.train.loop import pick_device, predict_logits


def _probabilities(run: Run, input_path: str, frame: pd.DataFrame, *, batch_size: int, text: str | None,
                   text_pair: str | None, device: str, runtime: str | None = None):
    """(N, num_labels) class probabilities of one run's final model, its labels and the input split.
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
        enc = encode_split(pred.tokenizer, split, pred.meta["max_length"], pred.meta["truncation"])
        logits = logits_of(pred, enc, batch_size, pred.tokenizer.pad_token_id or 0)
        return torch.softmax(torch.from_numpy(logits), 1).numpy(), names, split
    model, tokenizer, meta = classifier.load(folder)
    names = meta["labels"]
    split, _ = read_split(input_path, replace(data_cfg, format="auto"), "predict", names,
                          require_labels=False, frame=frame)
    if meta.get("series"):      # raw series/images, encoded with the scheme fitted on the run's train split
        enc = series.encode(meta["series"], split, tokenizer, meta["max_length"])
    else:
        enc = encode_split(tokenizer, split, meta["max_length"], meta["truncation"])
    dev = pick_device(device)
    model.to(dev)
    logits = predict_logits(model, enc, batch_size, dev, cfg.train.precision)
    return torch.softmax(torch.from_numpy(logits), 1).numpy(), names, split


def predict(run: Run | list[Run], input_path: str, *, batch_size: int = 128, text: str | None = None,
            text_pair: str | None = None, device: str = "auto",
            runtime: str | None = None) -> tuple[pd.DataFrame, dict | None]:
    """Input rows plus `predicted` and one `p_<label>` column per class. Several runs (e.g. the k
    fold models of a sweep) are an ensemble: their class probabilities are averaged; they must
    share the label set and order. When the input has the label column, also returns
    accuracy/macro-F1 on it (unseen labels are errors); for an ensemble also each member's."""
    runs = run if isinstance(run, list) else [run]
    if not runs:
        raise StoreError("no runs to predict with")
    for r in runs:
        kinds.require(r, "predict")
    sequence = runs[0].info.get("task") == "sequence"
    frame = None if sequence else read_table(input_path, "auto")
    kw = {"batch_size": batch_size, "text": text, "text_pair": text_pair, "device": device, "runtime": runtime}
    probs, names, split = _probabilities(runs[0], input_path, frame, **kw)
    if sequence:    # numeric inputs have no table to extend: one row per example, by id
        frame = pd.DataFrame({"id": split.texts})
    members = [probs]
    for other in runs[1:]:
        p, other_names, _ = _probabilities(other, input_path, frame, **kw)
        if other_names != names:
            raise StoreError(f"run {other.id} has other labels than run {runs[0].id} "
                             f"({len(other_names)} vs {len(names)}, or another order); an ensemble "
                             "averages probabilities of the same classes")
        members.append(p)
    probs = np.mean(members, axis=0)
    out = frame.copy()
    out["predicted"] = [names[i] for i in probs.argmax(1)]
    for j, n in enumerate(names):
        out[f"p_{n}"] = probs[:, j].round(6)
    scores = None
    if (split.labels >= 0).all():
        scores = M.classification(split.labels, probs.argmax(1), names)
        if len(runs) > 1:
            scores["members"] = {r.id: M.classification(split.labels, p.argmax(1), names)["accuracy"]
                                 for r, p in zip(runs, members)}
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

