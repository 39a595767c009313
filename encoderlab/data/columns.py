"""From a table's columns to a split: the `Split` record, a required column, text values, and the
labels of each task (class ids, label sets, regression targets), each bad value reported with its
file, row and field. Shared by the text readers (dataset.py), the series readers (series.py) and the
corpus reader."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from encoderlab.config import DataConfig
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


def labels_raw(series: pd.Series, file: str, field: str) -> list[str]:
    out = []
    for i, v in enumerate(series.tolist(), 1):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            raise DataError("missing label", file=file, row=i, field=field)
        if isinstance(v, float) and v.is_integer():
            v = int(v)  # parquet/jsonl 1.0 -> "1", same as csv "1"
        out.append(str(v).strip())
    return out


def labels_to_ids(values: list, cfg: DataConfig, path: str,
                  label_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Label values -> integer ids; the label order is data.labels, else sorted train labels.
    With `label_names` given (validation, test, predict), unseen labels are errors."""
    raw = labels_raw(pd.Series(values, dtype=object), path, cfg.label)
    if label_names is None:
        label_names = list(cfg.labels) if cfg.labels else sorted(set(raw), key=label_key)
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


def binary_column(series: pd.Series, file: str, field: str) -> np.ndarray:
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
        label_names = list(cfg.labels) if cfg.labels else sorted(seen, key=label_key)
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


def targets(values: list, path: str, field: str) -> np.ndarray:
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


def label_key(s: str):
    """Sort numeric labels numerically ("2" before "10"), others alphabetically."""
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)
