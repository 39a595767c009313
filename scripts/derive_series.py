"""Derive the builtin numeric datasets (time series and images) shipped in encoderlab/data/builtin/.

Command (aeon is heavy and pins numpy, so it runs in a venv of its own, never the project's):

    python3.11 -m venv /tmp/aeon-venv && /tmp/aeon-venv/bin/pip install aeon==1.6.0
    apt-get install -y dataset-fashion-mnist
    /tmp/aeon-venv/bin/python scripts/derive_series.py

Each set becomes train/test `.npz` files holding `x` (values) and `y` (label strings), loaded with
`allow_pickle=False`. Series of unequal length are stored ragged: `x` is (C, total steps) and
`x_lengths` (N,) the steps of each example, in order. Images are uint8 (N, H, W).
Sources and licences: encoderlab/data/builtin/README-series.md.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "encoderlab" / "data" / "builtin"
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot"]


def save(name: str, split: str, x, y) -> None:
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray([str(v) for v in y])
    if isinstance(x, list):      # ragged: concatenate along time
        lengths = np.array([a.shape[1] for a in x], dtype=np.int64)
        np.savez_compressed(folder / f"{split}.npz", x=np.concatenate(x, axis=1).astype(np.float32),
                            x_lengths=lengths, y=y)
    else:
        np.savez_compressed(folder / f"{split}.npz", x=x, y=y)
    print(name, split, len(y), "examples", sorted(set(y.tolist()))[:10])


def aeon_sets() -> None:
    from aeon.datasets import load_classification
    import aeon
    data = Path(aeon.__file__).parent / "datasets" / "data"
    for name, out in (("BasicMotions", "basic-motions"), ("JapaneseVowels", "japanese-vowels")):
        for split in ("train", "test"):
            X, y = load_classification(name, split=split, extract_path=str(data))
            if isinstance(X, list):
                x = [np.asarray(a, dtype=np.float32) for a in X]
                if len({a.shape[1] for a in x}) == 1:
                    x = np.stack(x)
            else:
                x = np.asarray(X, dtype=np.float32)
            save(out, split, x, y)


def digits() -> None:
    from sklearn.datasets import load_digits
    d = load_digits()
    # 16 grey levels (0..16) -> uint8 0..255 so every image set has the same pixel scale
    img = np.round(d.images * (255 / 16)).astype(np.uint8)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(img))
    test = np.sort(order[:360])
    train = np.sort(order[360:])
    save("digits", "train", img[train], d.target[train])
    save("digits", "test", img[test], d.target[test])


def idx(path: Path, offset: int) -> np.ndarray:
    return np.frombuffer(gzip.open(path).read(), dtype=np.uint8, offset=offset)


def fashion(per_class_train: int = 600, per_class_test: int = 100) -> None:
    """A stratified subset small enough for git; `data.source = "<debian folder>"` reads the full set."""
    rng = np.random.default_rng(0)
    for split, files, per_class in (("train", "train", per_class_train), ("test", "t10k", per_class_test)):
        images = idx(FASHION / f"{files}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        labels = idx(FASHION / f"{files}-labels-idx1-ubyte.gz", 8)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                                       for c in range(10)]))
        save("fashion-mnist", split, images[keep], [FASHION_NAMES[i] for i in labels[keep]])


if __name__ == "__main__":
    aeon_sets()
    digits()
    fashion()
    print(json.dumps({p.name: round(sum(f.stat().st_size for f in p.glob('*.npz')) / 1e6, 2)
                      for p in OUT.iterdir() if p.is_dir() and list(p.glob("*.npz"))}))
