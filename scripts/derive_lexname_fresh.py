"""Write a fresh split of builtin:wordnet-lexname that the first search study never scored.

The first TPE-vs-grid study (docs/search.md, round 1) trained on `data.max_train = 1000` rows of
the builtin's train split and scored `data.max_eval = 400` rows of its validation and test splits.
This script drops exactly those rows and writes what is left, so a second study is judged on
examples no earlier decision about the search protocol has seen:

    train       1,000 rows drawn (stratified, like data.max_train) from the 19,000 unused train rows,
                plus rows of classes the draw left under 2 examples
    validation  the 1,600 validation rows round 1 did not use
    test        the 1,600 test rows round 1 did not use

    python scripts/derive_lexname_fresh.py        # -> examples/data/lexname-fresh/*.jsonl.gz

Byte for byte reproducible (fixed gzip mtime, rows in the builtin's order).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

from encoderlab.config import DataConfig
from encoderlab.data import builtin
from encoderlab.data.dataset import load_data

ROUND1 = {"max_train": 1000, "max_eval": 400}   # examples/search-lexname-*.toml
TRAIN_ROWS = 1000
SEED = 0
MIN_PER_CLASS = 2   # like the builtin's splits: every class at least twice


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _write(rows: list[dict], path: Path) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    path.write_bytes(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "examples/data/lexname-fresh")
    args = ap.parse_args()
    ds = builtin.get("wordnet-lexname")
    used, _ = load_data(DataConfig(source="builtin:wordnet-lexname", **ROUND1))
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        seen = set(zip(getattr(used, split).texts, (used.label_names[i] for i in getattr(used, split).labels)))
        rest = [r for r in _rows(ds.files[split]) if (r["text"], r["label"]) not in seen]
        assert len(rest) == len(_rows(ds.files[split])) - len(seen), f"{split}: a round-1 row matched twice"
        if split == "train":   # a stratified draw, the way data.max_train draws
            tmp = args.out / "_rest.jsonl.gz"
            _write(rest, tmp)
            drawn, _ = load_data(DataConfig(source=str(tmp), text="text", label="label", max_train=TRAIN_ROWS,
                                            validation=str(tmp), test=str(tmp), split_seed=SEED))
            keep = set(drawn.train.texts)
            tmp.unlink()
            have: dict[str, int] = {}
            for r in rest:   # a class too rare to be drawn (adj.ppl: 9 of 19,000) gets its first 2 rows
                if r["text"] in keep:
                    have[r["label"]] = have.get(r["label"], 0) + 1
            for r in rest:
                if have.get(r["label"], 0) < MIN_PER_CLASS and r["text"] not in keep:
                    keep.add(r["text"])
                    have[r["label"]] = have.get(r["label"], 0) + 1
            rest = [r for r in rest if r["text"] in keep]
        _write(rest, args.out / f"{split}.jsonl.gz")
        print(f"{split}: {len(rest)} rows (round 1 used {len(seen)})")


if __name__ == "__main__":
    main()
