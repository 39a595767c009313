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
from encoderlab.data.readers import read_table
from encoderlab.errors import DataError


@dataclass
class Split:
    """One split: texts (and second texts for pairs), integer labels (-1 = unlabelled)."""
    name: str
    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray
    source: str = ""
    series: list[np.ndarray] | None = None   # task "sequence": (C, T) or (C, H, W) float32 arrays;
                                             # texts then hold example ids
    labelled: bool = True                    # False: a file without its label column (predict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> "Split":
        idx = np.asarray(idx)
        return replace(self, texts=[self.texts[i] for i in idx],
                       pairs=None if self.pairs is None else [self.pairs[i] for i in idx],
                       labels=self.labels[idx],
                       series=None if self.series is None else [self.series[i] for i in idx])


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


def require_column(df: pd.DataFrame, name: str, file: str, key: str) -> pd.Series:
    """df[name], or a DataError naming the file, the columns there and the config `key` to set."""
    if name not in df.columns:
        import difflib
        cols = [str(c) for c in df.columns]
        close = difflib.get_close_matches(name, cols, n=1)
        hint = f"; did you mean '{close[0]}'? (set {key} = \"{close[0]}\")" if close else ""
        raise DataError(f"column '{name}' not found (columns: {', '.join(cols)}){hint}",
                        file=file, field=name)
    return df[name]


def text_values(series: pd.Series, file: str, field: str, allow_empty: bool = False) -> list[str]:
    """The column as strings; a missing (or, unless allowed, empty) value is a DataError with its row."""
    out = []
    for i, v in enumerate(series.tolist(), 1):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise DataError("missing value", file=file, row=i, field=field)
        if not isinstance(v, str):
            v = str(v)
        if not v.strip() and not allow_empty:
            raise DataError("empty text", file=file, row=i, field=field)
        out.append(v)
    return out


def _labels_raw(series: pd.Series, file: str, field: str) -> list[str]:
    out = []
    for i, v in enumerate(series.tolist(), 1):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            raise DataError("missing label", file=file, row=i, field=field)
        if isinstance(v, float) and v.is_integer():
            v = int(v)  # parquet/jsonl 1.0 -> "1", same as csv "1"
        out.append(str(v).strip())
    return out


def read_split(path: str, cfg: DataConfig, name: str, label_names: list[str] | None,
               require_labels: bool = True, frame: pd.DataFrame | None = None) -> tuple[Split, list[str]]:
    """Read one file into a Split. With `label_names` given, unseen labels are errors."""
    if cfg.task == "sequence":
        from encoderlab.data.series import read_series_split
        return read_series_split(path, cfg, name, label_names, require_labels)
    df = read_table(path, cfg.format) if frame is None else frame
    texts = text_values(require_column(df, cfg.text, path, "data.text"), path, cfg.text)
    pairs = text_values(require_column(df, cfg.text_pair, path, "data.text_pair"), path, cfg.text_pair) \
        if cfg.task == "pair" or (cfg.text_pair and cfg.task in ("multilabel", "regression")) else None
    if cfg.task == "multilabel" and cfg.label_columns:
        if not require_labels and not all(c in df.columns for c in cfg.label_columns):
            return Split(name, texts, pairs, np.full(len(texts), -1), path, labelled=False), []
        labels = np.stack([_binary(require_column(df, c, path, "data.label_columns"), path, c)
                           for c in cfg.label_columns], 1)
        return Split(name, texts, pairs, labels, path), list(cfg.label_columns)
    if cfg.label in df.columns or require_labels:
        raw = require_column(df, cfg.label, path, "data.label").tolist()
    else:
        return Split(name, texts, pairs, np.full(len(texts), -1), path, labelled=False), []
    if cfg.task == "multilabel":
        labels, label_names = label_sets(raw, cfg, path, label_names)
    elif cfg.task == "regression":
        labels, label_names = _targets(raw, path, cfg.label), [cfg.label]
    else:
        labels, label_names = labels_to_ids(raw, cfg, path, label_names)
    return Split(name, texts, pairs, labels, path), label_names


def labels_to_ids(values: list, cfg: DataConfig, path: str,
                  label_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Label values -> integer ids; the label order is data.labels, else sorted train labels.
    With `label_names` given (validation, test, predict), unseen labels are errors."""
    raw = _labels_raw(pd.Series(values, dtype=object), path, cfg.label)
    if label_names is None:
        label_names = list(cfg.labels) if cfg.labels else sorted(set(raw), key=_label_key)
    index = {n: i for i, n in enumerate(label_names)}
    labels = np.empty(len(raw), dtype=np.int64)
    for i, lab in enumerate(raw):
        if lab not in index:
            shown = ", ".join(label_names[:20]) + (" ..." if len(label_names) > 20 else "")
            what = "is not in data.labels" if cfg.labels else "does not occur in the training data"
            raise DataError(f"label '{lab}' {what} (known labels: {shown})",
                            file=path, row=i + 1, field=cfg.label)
        labels[i] = index[lab]
    return labels, label_names


def _binary(series: pd.Series, file: str, field: str) -> np.ndarray:
    """A 0/1 label column -> float32 (true/false and "0"/"1" accepted)."""
    out = np.empty(len(series), dtype=np.float32)
    for i, v in enumerate(series.tolist()):
        key = str(v).strip().lower()
        if key not in ("0", "1", "0.0", "1.0", "true", "false"):
            raise DataError(f"expected 0 or 1, got {v!r}", file=file, row=i + 1, field=field)
        out[i] = key in ("1", "1.0", "true")
    return out


def label_sets(values: list, cfg: DataConfig, path: str,
               label_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Multilabel values (a `data.label_sep`-joined string, or a list) -> (N, L) 0/1 float32. An
    empty string / list / missing value is the empty set. With `label_names` given (validation,
    test, predict), unseen labels are errors; otherwise the names are data.labels or sorted train labels."""
    sets = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            items = []
        elif isinstance(v, str):
            items = [x.strip() for x in v.split(cfg.label_sep)] if cfg.label_sep else [v.strip()]
        elif isinstance(v, (list, tuple, np.ndarray)):
            items = [str(x).strip() for x in v]
        else:
            items = [str(v).strip()]
        sets.append([x for x in items if x])
    if label_names is None:
        seen = {x for items in sets for x in items}
        label_names = list(cfg.labels) if cfg.labels else sorted(seen, key=_label_key)
    index = {n: j for j, n in enumerate(label_names)}
    out = np.zeros((len(sets), len(label_names)), dtype=np.float32)
    for i, items in enumerate(sets):
        for x in items:
            if x not in index:
                shown = ", ".join(label_names[:20]) + (" ..." if len(label_names) > 20 else "")
                what = "is not in data.labels" if cfg.labels else "does not occur in the training data"
                raise DataError(f"label '{x}' {what} (known labels: {shown})", file=path, row=i + 1,
                                field=cfg.label)
            out[i, index[x]] = 1.0
    return out, label_names


def _targets(values: list, path: str, field: str) -> np.ndarray:
    """Regression targets -> (N,) float32; a missing or non-numeric value is an error."""
    out = np.empty(len(values), dtype=np.float32)
    for i, v in enumerate(values):
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise DataError(f"expected a number, got {v!r}", file=path, row=i + 1, field=field) from None
        if not np.isfinite(x):
            raise DataError(f"missing or non-finite target {v!r}", file=path, row=i + 1, field=field)
        out[i] = x
    return out


def strata(labels: np.ndarray) -> np.ndarray:
    """What splits, folds and caps keep the shares of: the class (classification), the number of
    labels up to 3 (multilabel), the target's quintile (regression)."""
    if labels.ndim == 2:
        return np.minimum(labels.sum(1), 3).astype(np.int64)
    if labels.dtype.kind == "f":
        edges = np.quantile(labels, [0.2, 0.4, 0.6, 0.8]) if len(labels) else []
        return np.searchsorted(edges, labels, side="right").astype(np.int64)
    return labels


def _label_key(s: str):
    """Sort numeric labels numerically ("2" before "10"), others alphabetically."""
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


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
