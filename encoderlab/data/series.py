"""Numeric sequences (multivariate time series, trajectories) and images as labelled splits.

Every example becomes a float32 array: (C, T) for a series (T may differ between examples) or
(C, H, W) for an image. Readers:

* `.npz` with the values under `data.text` (default key `x`) and labels under `data.label`
  (`y`): a regular array laid out per `data.layout`, or ragged series stored as `x` (C, total
  steps) + `x_lengths` (N,); `.npy` holds values only (unlabelled, e.g. for `predict`);
* csv / tsv / jsonl / parquet with one example per row and a list-valued column (a list of
  steps, a list of channels of steps, or a flat image with `data.image_shape`);
* the long form: one row per time step, `data.id_column` naming the example, optional
  `data.time_column` to order the steps, `data.channels` (or every numeric column) as values.

Missing values follow `data.nan`: an error naming file, row and field, linear interpolation
inside the channel, or zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from encoderlab.config import DataConfig
from encoderlab.data.columns import Split, labels_to_ids, require_column
from encoderlab.data.readers import read_table
from encoderlab.errors import DataError


def read_series_split(path: str, cfg: DataConfig, name: str, label_names: list[str] | None,
                      require_labels: bool = True) -> tuple[Split, list[str]]:
    """Read one file of numeric examples into a Split whose `series` holds the arrays."""
    suffix = Path(path).suffix.lower()
    field = cfg.text
    if suffix in (".npz", ".npy"):
        arrays, raw, ids = _read_numpy(path, cfg, require_labels)
        field = _numpy_key(cfg)
    else:
        df = read_table(path, cfg.format)
        if cfg.id_column:
            arrays, raw, ids = _read_long(df, path, cfg, require_labels)
        else:
            arrays, raw, ids = _read_wide(df, path, cfg, require_labels)
    if not arrays:
        raise DataError("no examples", file=path)
    # long form: the example id names the culprit (its rows are spread over the file)
    arrays = [_fill(a, cfg.nan, path, None if cfg.id_column else i + 1,
                    f"{cfg.id_column} = {ids[i]}" if cfg.id_column else field) for i, a in enumerate(arrays)]
    if raw is None:
        return Split(name, ids, None, np.full(len(arrays), -1), path, series=arrays), []
    labels, label_names = labels_to_ids(raw, cfg, path, label_names)
    return Split(name, ids, None, labels, path, series=arrays), label_names


# -- numpy files -------------------------------------------------------------------------------

def _read_numpy(path: str, cfg: DataConfig, require_labels: bool):
    try:
        return _numpy_arrays(path, cfg, require_labels)
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        raise DataError("object arrays are refused (they would need unpickling); store ragged series "
                        "as x (C, total steps) + x_lengths (N,)", file=path) from None
    except OSError as e:
        raise DataError(f"cannot read numpy file: {e}", file=path) from None


def _numpy_key(cfg: DataConfig) -> str:
    """The npz member holding the values: data.text when set, else `x`."""
    return cfg.text if cfg.text != "text" else "x"


def _numpy_arrays(path: str, cfg: DataConfig, require_labels: bool):
    store = np.load(path, allow_pickle=False)   # npz members load lazily: errors surface on access
    if isinstance(store, np.ndarray):
        values, lengths, raw = store, None, None
    else:
        key = _numpy_key(cfg)
        if key not in store.files:
            raise DataError(f"array '{key}' not found (arrays: {', '.join(store.files)}); set data.text",
                            file=path, field=key)
        values = store[key]
        lengths = store[f"{key}_lengths"] if f"{key}_lengths" in store.files else None
        lab = cfg.label if cfg.label != "label" or "label" in store.files else "y"
        raw = [str(v) for v in store[lab].tolist()] if lab in store.files else None
    if raw is None and require_labels:
        raise DataError(f"no label array '{cfg.label}' (a .npy file holds values only)", file=path,
                        field=cfg.label)
    if values.dtype.kind not in "fiub":
        raise DataError(f"values must be numbers, got dtype {values.dtype}", file=path, field=cfg.text)
    if lengths is not None:
        if values.ndim == 1:
            values = values[None]
        if lengths.sum() != values.shape[1]:
            raise DataError(f"x_lengths add up to {int(lengths.sum())} steps but x has {values.shape[1]}",
                            file=path, field="x_lengths")
        arrays = np.split(values.astype(np.float32), np.cumsum(lengths)[:-1], axis=1)
    else:
        arrays = list(_examples(values, cfg.layout, path, cfg.text))
    if raw is not None and len(raw) != len(arrays):
        raise DataError(f"{len(arrays)} examples but {len(raw)} labels", file=path, field=cfg.label)
    return arrays, raw, [str(i) for i in range(len(arrays))]


def _examples(values: np.ndarray, layout: str, path: str, field: str):
    """Split a regular (N, ...) array into per-example (C, T) or (C, H, W) float32 arrays."""
    if layout == "auto":
        layout = {2: "series1", 3: "image" if values.dtype == np.uint8 else "channels-time",
                  4: "image"}.get(values.ndim, "")
        if not layout:
            raise DataError(f"cannot read a {values.ndim}-D array as examples; expected (N, T), (N, C, T), "
                            "(N, H, W) or (N, H, W, C)", file=path, field=field)
    with np.errstate(over="ignore"):     # beyond float32 becomes inf, reported with its row below
        v = values.astype(np.float32)
    if layout == "series1" or (layout in ("channels-time", "time-channels") and v.ndim == 2):
        v = v[:, None, :]
    elif layout == "time-channels":
        v = v.transpose(0, 2, 1)
    elif layout == "image":
        v = v[:, None] if v.ndim == 3 else v.transpose(0, 3, 1, 2)
    if v.ndim not in (3, 4):
        raise DataError(f"array of shape {values.shape} does not fit data.layout = '{layout}'",
                        file=path, field=field)
    return iter(v)


# -- tables ------------------------------------------------------------------------------------

def _labels(df: pd.DataFrame, cfg: DataConfig, path: str, require: bool) -> list | None:
    if cfg.label not in df.columns and not require:
        return None
    return require_column(df, cfg.label, path, "data.label").tolist()


def _read_wide(df: pd.DataFrame, path: str, cfg: DataConfig, require_labels: bool):
    col = require_column(df, cfg.text, path, "data.text")
    arrays = []
    for row, cell in enumerate(col.tolist(), 1):
        if isinstance(cell, str):
            try:
                cell = json.loads(cell)
            except ValueError:
                raise DataError("expected a list of numbers (JSON in a csv cell)", file=path, row=row,
                                field=cfg.text) from None
        try:
            a = np.asarray(cell if cell is not None else [], dtype=np.float32)
        except (TypeError, ValueError):
            # pyarrow gives nested lists as arrays of arrays; ragged channels land here too
            try:
                a = np.stack([np.asarray(c, dtype=np.float32) for c in cell])
            except (TypeError, ValueError):
                raise DataError("expected numbers (a list, or equal-length lists per channel)", file=path,
                                row=row, field=cfg.text) from None
        if a.size == 0:
            raise DataError("empty series", file=path, row=row, field=cfg.text)
        if cfg.image_shape:
            if a.size != int(np.prod(cfg.image_shape)):
                raise DataError(f"{a.size} values do not make an image of shape {tuple(cfg.image_shape)}",
                                file=path, row=row, field=cfg.text)
            a = a.reshape(cfg.image_shape)
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        elif a.ndim == 1:
            a = a[None]
        elif a.ndim != 2:
            raise DataError(f"a {a.ndim}-D list; expected steps or channels x steps", file=path, row=row,
                            field=cfg.text)
        arrays.append(a)
    return arrays, _labels(df, cfg, path, require_labels), [str(i) for i in range(len(arrays))]


def _read_long(df: pd.DataFrame, path: str, cfg: DataConfig, require_labels: bool):
    ids = require_column(df, cfg.id_column, path, "data.id_column")
    skip = {cfg.id_column, cfg.time_column, cfg.label}
    # csv cells arrive as strings; empty cells become NaN (data.nan decides), anything else is an error
    numeric = {c: pd.to_numeric(df[c], errors="coerce") for c in (cfg.channels or [c for c in df.columns
                                                                                 if c not in skip])
               if c in df.columns}
    channels = list(cfg.channels) or list(numeric)
    if not channels:
        raise DataError("no value columns besides id/time/label; set data.channels", file=path)
    for c in channels:
        col = require_column(df, c, path, "data.channels")
        bad = (numeric[c].isna() & col.notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            hint = "" if cfg.channels else " (every column but id/time/label is read as a channel; set data.channels)"
            raise DataError(f"not a number: {col.iloc[row - 1]!r}{hint}", file=path, row=row, field=str(c))
    values = pd.DataFrame({c: numeric[c] for c in channels})
    has_labels = cfg.label in df.columns or require_labels
    if has_labels:
        require_column(df, cfg.label, path, "data.label")
    frame = values.assign(_row=np.arange(1, len(df) + 1), _id=ids.to_numpy())
    if cfg.time_column:
        frame["_t"] = pd.to_numeric(require_column(df, cfg.time_column, path, "data.time_column"), errors="coerce")
    if has_labels:
        frame["_label"] = df[cfg.label].to_numpy()
    arrays, raw, names = [], [], []
    for key, g in frame.groupby("_id", sort=False):
        if cfg.time_column:
            g = g.sort_values("_t", kind="stable")
        arrays.append(g[channels].to_numpy(dtype=np.float32).T)      # (C, T)
        names.append(str(key))
        if has_labels:
            labs = g["_label"]
            if labs.nunique(dropna=False) > 1:
                row = int(g["_row"].iloc[int(np.flatnonzero((labs != labs.iloc[0]).to_numpy())[0])])
                raise DataError(f"example '{key}' has more than one label ({labs.iloc[0]!r} and others)",
                                file=path, row=row, field=cfg.label)
            raw.append(labs.iloc[0])
    return arrays, raw if has_labels else None, names


# -- missing values ----------------------------------------------------------------------------

def _fill(a: np.ndarray, how: str, path: str, row: int | None, field: str) -> np.ndarray:
    bad = ~np.isfinite(a)
    if not bad.any():
        return a
    if how == "error":
        where = np.argwhere(bad)[0]
        at = "step " + ", ".join(str(int(w)) for w in where[1:]) if len(where) == 2 else \
            "position (" + ", ".join(str(int(w)) for w in where[1:]) + ")"
        raise DataError(f"missing or infinite value at channel {int(where[0])}, {at} "
                        "(set data.nan = \"interpolate\" or \"zero\" to fill it)", file=path, row=row, field=str(field))
    a = a.copy()
    if how == "zero":
        a[bad] = 0.0
        return a
    flat = a.reshape(a.shape[0], -1)          # interpolate along each channel's steps (images: raster order)
    for c in range(flat.shape[0]):
        m = np.isfinite(flat[c])
        if not m.any():
            raise DataError(f"channel {c} has no finite value to interpolate from", file=path, row=row,
                            field=str(field))
        if not m.all():
            x = np.arange(flat.shape[1])
            flat[c, ~m] = np.interp(x[~m], x[m], flat[c, m])
    return flat.reshape(a.shape)
