"""Task data: labelled splits of single texts or text pairs, with a label vocabulary.

Labels per task: classification (N,) int64 class ids; multilabel (N, L) float32 0/1 (from a
`data.label_sep`-joined string column, a list column, or one 0/1 column per label); regression
(N,) float32 targets.

`load_data(cfg)` resolves builtin datasets, reads files, maps columns, validates every row and
makes the splits (fixed files, or a seeded stratified split of the source)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from encoderlab.config import DataConfig
from encoderlab.data import builtin
from encoderlab.data.columns import (Split, binary_column, label_sets, labels_to_ids,  # noqa: F401 (Split)
                                     require_column, targets, text_values)
from encoderlab.data.readers import read_table
from encoderlab.data.series import read_series_split
from encoderlab.errors import DataError


@dataclass
class TaskData:
    task: str                 # "single" | "pair" | "sequence" | "multilabel" | "regression"
    label_names: list[str]
    train: Split
    validation: Split
    test: Split

    def class_balance(self, split: str = "train") -> dict[str, float]:
        labels = getattr(self, split).labels
        if self.task in ("multilabel", "regression"):
            return {}
        counts = np.bincount(labels, minlength=len(self.label_names))
        return {n: c / max(len(labels), 1) for n, c in zip(self.label_names, counts)}

    def majority_baseline(self, split: str = "validation") -> tuple[str, float]:
        """Accuracy of always predicting the most frequent *training* class on `split`."""
        if self.task in ("multilabel", "regression"):
            return "", None
        top = int(np.bincount(self.train.labels, minlength=len(self.label_names)).argmax())
        labels = getattr(self, split).labels
        return self.label_names[top], float(np.mean(labels == top)) if len(labels) else 0.0


def resolve_columns(cfg: DataConfig) -> DataConfig:
    """Fill file paths and column names of builtin datasets; infer the task."""
    if cfg.source.startswith("builtin:"):
        spec = builtin.get(cfg.source.removeprefix("builtin:"))
        if spec.task in ("sequence", "multilabel", "regression") and cfg.task == "auto":
            cfg = replace(cfg, task=spec.task)
        defaults = DataConfig()
        cfg = replace(
            cfg,
            source=str(spec.files["train"]),
            validation=cfg.validation or str(spec.files.get("validation", "")),
            test=cfg.test or str(spec.files.get("test", "")),
            text=spec.text if cfg.text == defaults.text else cfg.text,
            text_pair=spec.text_pair if cfg.text_pair == defaults.text_pair else cfg.text_pair,
            label=spec.label if cfg.label == defaults.label else cfg.label,
        )
    task = cfg.task if cfg.task != "auto" else ("pair" if cfg.text_pair else "single")
    if task != "multilabel" and (cfg.label_columns or cfg.label_sep != "|"):
        raise DataError("data.label_columns / data.label_sep are for data.task = \"multilabel\"")
    if task == "pair" and not cfg.text_pair:
        raise DataError("data.task = 'pair' needs data.text_pair (the second text's column)")
    return replace(cfg, task=task)


def read_split(path: str, cfg: DataConfig, name: str, label_names: list[str] | None,
               require_labels: bool = True, frame: pd.DataFrame | None = None) -> tuple[Split, list[str]]:
    """Read one file into a Split. With `label_names` given, unseen labels are errors."""
    if cfg.task == "sequence":
        return read_series_split(path, cfg, name, label_names, require_labels)
    df = read_table(path, cfg.format) if frame is None else frame
    texts = text_values(require_column(df, cfg.text, path, "data.text"), path, cfg.text)
    pairs = text_values(require_column(df, cfg.text_pair, path, "data.text_pair"), path, cfg.text_pair) \
        if cfg.task == "pair" or (cfg.text_pair and cfg.task in ("multilabel", "regression")) else None
    if cfg.task == "multilabel" and cfg.label_columns:
        if not require_labels and not all(c in df.columns for c in cfg.label_columns):
            return Split(name, texts, pairs, np.full(len(texts), -1), path, labelled=False), []
        labels = np.stack([binary_column(require_column(df, c, path, "data.label_columns"), path, c)
                           for c in cfg.label_columns], 1)
        return Split(name, texts, pairs, labels, path), list(cfg.label_columns)
    if cfg.label in df.columns or require_labels:
        raw = require_column(df, cfg.label, path, "data.label").tolist()
    else:
        return Split(name, texts, pairs, np.full(len(texts), -1), path, labelled=False), []
    if cfg.task == "multilabel":
        labels, label_names = label_sets(raw, cfg, path, label_names)
    elif cfg.task == "regression":
        labels, label_names = targets(raw, path, cfg.label), [cfg.label]
    else:
        labels, label_names = labels_to_ids(raw, cfg, path, label_names)
    return Split(name, texts, pairs, labels, path), label_names


def strata(labels: np.ndarray) -> np.ndarray:
    """What splits, folds and caps keep the shares of: the class (classification), the number of
    labels up to 3 (multilabel), the target's quintile (regression)."""
    if labels.ndim == 2:
        return np.minimum(labels.sum(1), 3).astype(np.int64)
    if labels.dtype.kind == "f":
        edges = np.quantile(labels, [0.2, 0.4, 0.6, 0.8]) if len(labels) else []
        return np.searchsorted(edges, labels, side="right").astype(np.int64)
    return labels


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions)+1 parts (the rest first), keeping class shares; every
    class keeps at least one example in the rest."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for k, f in enumerate(fractions, 1):
            n = max(0, min(int(round(f * len(idx))), len(idx) - start - 1))
            parts[k].extend(idx[start:start + n])
            start += n
        parts[0].extend(idx[start:])
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def fold_ids(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified fold id (0..k-1) per example: each class dealt round-robin after a shuffle."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        # continue the round-robin across classes so small classes don't all land in fold 0
        out[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return out


def _cap(split: Split, n: int, seed: int) -> Split:
    """Exactly n examples, each class's share kept (within one example)."""
    if not n or len(split) <= n:
        return split
    rng = np.random.default_rng(seed)
    # rank r of a class of size m sits at (r + 0.5) / m; the n lowest positions keep class shares
    pos = np.empty(len(split))
    key = strata(split.labels)
    for c in np.unique(key):
        idx = rng.permutation(np.flatnonzero(key == c))
        pos[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    order = np.lexsort((rng.random(len(split)), pos))
    return split.subset(np.sort(order[:n]))


def load_data(cfg: DataConfig) -> tuple[TaskData, DataConfig]:
    """Read and validate all splits. Returns the data and the config with paths resolved."""
    cfg = resolve_columns(cfg)
    train, names = read_split(cfg.source, cfg, "train", None)
    if cfg.folds and not 0 <= cfg.fold < cfg.folds:
        raise DataError(f"data.fold = {cfg.fold} is outside 0 .. {cfg.folds - 1} (data.folds = {cfg.folds})")
    if cfg.folds == 1:
        raise DataError("data.folds = 1 holds nothing out; use 0 (off) or k >= 2")
    # with k-fold, validation comes from the training data, so no validation file/fraction is used
    need = [f for f, path in (("validation", cfg.validation), ("test", cfg.test))
            if not path and not (f == "validation" and cfg.folds)]
    if need:
        fracs = [cfg.validation_fraction if f == "validation" else cfg.test_fraction for f in need]
        if sum(fracs) >= 0.9:
            raise DataError(f"validation_fraction + test_fraction = {sum(fracs):.2f} leaves too little to train on")
        parts = stratified_split(strata(train.labels), fracs, cfg.split_seed)
        held = {f: train.subset(p) for f, p in zip(need, parts[1:])}
        for f in need:
            held[f].name = f
        train = train.subset(parts[0])
    else:
        held = {}
    splits = {"train": _cap(train, cfg.max_train, cfg.split_seed)}
    if cfg.folds:
        fold_of = fold_ids(strata(splits["train"].labels), cfg.folds, cfg.split_seed)
        held["validation"] = splits["train"].subset(np.flatnonzero(fold_of == cfg.fold))
        held["validation"].name = "validation"
        splits["train"] = splits["train"].subset(np.flatnonzero(fold_of != cfg.fold))
    for f in ("validation", "test"):
        if f in held:
            splits[f] = held[f]
        else:
            splits[f], _ = read_split(getattr(cfg, f), cfg, f, names)
    y = splits["train"].labels
    if cfg.task == "multilabel":
        if not y.size or not y.any():
            raise DataError("the training data has no labels set", file=cfg.source, field=cfg.label)
    elif cfg.task == "regression":
        if len(y) < 2 or np.ptp(y) == 0:
            raise DataError("the training targets are all equal: nothing to learn", file=cfg.source,
                            field=cfg.label)
    elif len(np.unique(y)) < 2:
        raise DataError("training data has fewer than 2 distinct labels", file=cfg.source, field=cfg.label)
    for f in ("validation", "test"):
        splits[f] = _cap(splits[f], cfg.max_eval, cfg.split_seed)
        if len(splits[f]) == 0:
            raise DataError(f"the {f} split is empty; raise data.{f}_fraction or give data.{f}",
                            file=cfg.source)
    return TaskData(cfg.task, names, **splits), cfg


__all__ = ["Split", "TaskData", "load_data", "stratified_split", "resolve_columns", "read_split", "fold_ids",
           "label_sets", "strata"]
