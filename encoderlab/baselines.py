"""Non-transformer baselines for numeric sequences, so results show whether the encoder earns its cost.

* majority — always the most frequent training class;
* logreg   — logistic regression on the flattened examples (after the run's channel selection,
             pooling and train-fitted normalisation; series resampled to the median train length);
* rocket   — aeon's ROCKET classifier (random convolution kernels + ridge), only when the optional
             `timeseries` extra (aeon) is installed; otherwise reported as skipped.

Both see the same train / validation / test splits as the encoder (`load_data`)."""

from __future__ import annotations

import time

import numpy as np

from encoderlab import config as C
from encoderlab.data.dataset import load_data
from encoderlab.encode import series
from encoderlab.errors import ConfigError


def _features(xs: list[np.ndarray], state: dict, length: int | None) -> np.ndarray:
    """(N, C, L): prepared, normalised examples; series linearly resampled to `length` steps."""
    out = []
    for a in xs:
        a = series.prepare(a, state)
        a = a.reshape(a.shape[0], -1)                     # images: pixels in raster order
        if length is not None and a.shape[1] != length:
            grid = np.linspace(0, a.shape[1] - 1, length)
            a = np.stack([np.interp(grid, np.arange(a.shape[1]), ch) for ch in a])
        out.append(a.astype(np.float32))
    return np.stack(out)


def run(cfg: C.ExperimentConfig, methods: tuple[str, ...] = ("majority", "logreg", "rocket")) -> list[dict]:
    """One row per method: validation and test accuracy, fit seconds, or why it was skipped."""
    data, _ = load_data(cfg.data)
    if data.task != "sequence":
        raise ConfigError("baselines are for data.task = \"sequence\" (numeric series / images)")
    state = series.fit(C.replace(cfg, series__scheme="patch").series, data.train)
    length = None if state["kind"] == "image" else int(np.median([a.shape[-1] for a in data.train.series]))
    X = {s: _features(getattr(data, s).series, state, length) for s in ("train", "validation", "test")}
    y = {s: getattr(data, s).labels for s in X}
    rows = []
    for m in methods:
        t0 = time.perf_counter()
        if m == "majority":
            top = np.bincount(y["train"]).argmax()
            pred = {s: np.full(len(y[s]), top) for s in ("validation", "test")}
        elif m == "logreg":
            from sklearn.linear_model import LogisticRegression
            clf = LogisticRegression(max_iter=2000, C=1.0)
            clf.fit(X["train"].reshape(len(X["train"]), -1), y["train"])
            pred = {s: clf.predict(X[s].reshape(len(X[s]), -1)) for s in ("validation", "test")}
        elif m == "rocket":
            try:
                from aeon.classification.convolution_based import RocketClassifier
            except ImportError:
                rows.append({"method": m, "skipped": "aeon not installed (extra 'timeseries': aeon==1.6.0)"})
                continue
            clf = RocketClassifier(n_kernels=2000, random_state=cfg.train.seed)
            flat = {s: X[s].reshape(len(X[s]), X[s].shape[1], -1) for s in X}
            clf.fit(flat["train"], y["train"])
            pred = {s: clf.predict(flat[s]) for s in ("validation", "test")}
        else:
            raise ConfigError(f"unknown baseline '{m}' (majority, logreg, rocket)")
        rows.append({"method": m, "validation_accuracy": float(np.mean(pred["validation"] == y["validation"])),
                     "test_accuracy": float(np.mean(pred["test"] == y["test"])),
                     "seconds": time.perf_counter() - t0})
    return rows
