"""Label new examples with a stored run's final model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from encoderlab import metrics as M
from encoderlab.data.dataset import read_split, resolve_columns
from encoderlab.data.readers import read_table
from encoderlab.encode.text import encode_split
from encoderlab.errors import StoreError
from encoderlab.models import classifier
from encoderlab.store.runs import Run
from encoderlab.train.fit import pick_device, predict_logits


def predict(run: Run, input_path: str, *, batch_size: int = 128, text: str | None = None,
            text_pair: str | None = None, device: str = "auto") -> tuple[pd.DataFrame, dict | None]:
    """Input rows plus `predicted` and one `p_<label>` column per class. When the input has the
    label column, also returns accuracy/macro-F1 on it (unseen labels are errors)."""
    folder = run.dir / "model"
    if not (folder / "encoderlab.json").exists():
        raise StoreError(f"run {run.id} has no final model (status {run.status}); "
                         f"finish it with `encoderlab resume {run.id}`")
    cfg = run.config()
    data_cfg = resolve_columns(replace(cfg.data, text=text or cfg.data.text,
                                       text_pair=text_pair if text_pair is not None else cfg.data.text_pair))
    model, tokenizer, meta = classifier.load(folder)
    names = meta["labels"]
    frame = read_table(input_path, "auto")
    split, _ = read_split(input_path, replace(data_cfg, format="auto"), "predict", names,
                          require_labels=False, frame=frame)
    enc = encode_split(tokenizer, split, meta["max_length"], meta["truncation"])
    dev = pick_device(device)
    model.to(dev)
    logits = predict_logits(model, enc, batch_size, tokenizer.pad_token_id or 0, dev, cfg.train.precision)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    out = frame.copy()
    out["predicted"] = [names[i] for i in probs.argmax(1)]
    for j, n in enumerate(names):
        out[f"p_{n}"] = probs[:, j].round(6)
    scores = None
    if (split.labels >= 0).all():
        scores = M.classification(split.labels, probs.argmax(1), names)
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

