"""Shared fixtures: offline mode, a throwaway run store, tiny models, slices of real data."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the precision probe caches per machine; the suite keeps its own cache (measured once per session)
os.environ.setdefault("ENCODERLAB_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), "encoderlab-test-cache"))

import gzip  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from encoderlab import config as C  # noqa: E402
from encoderlab import machine  # noqa: E402
from encoderlab.data import builtin  # noqa: E402

# tiny models run fastest on one thread (and do not fight other work for the cores): the default
# of train.threads = 0 in every run of the suite
torch.set_num_threads(1)
machine.THREADS_DEFAULT = 1

# ~0.5M parameters: MiniLM's tokenizer (30,522 tokens) with a 2-layer, 16-wide BERT
TINY_MODEL = {"path": "builtin:minilm-l6", "init": "random", "num_layers": 2, "hidden_size": 16,
              "num_heads": 2, "intermediate_size": 32}


# the same tiny model and two-class data as TOML text, for tests that write experiment files
def toml_keys(d: dict) -> str:
    """Plain `key = value` TOML lines (strings, numbers, booleans)."""
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())


TINY_MODEL_TOML = toml_keys(TINY_MODEL)


def two_class_data_toml(folder, validation: bool = True) -> str:
    """The [data] keys pointing at `two_class_csv` (without the table header)."""
    lines = [f'source = "{folder / "train.csv"}"']
    if validation:
        lines.append(f'validation = "{folder / "validation.csv"}"')
    lines += [f'test = "{folder / "test.csv"}"', 'text = "gloss"', 'label = "category"']
    return "\n".join(lines)


TINY_TRAIN = {"epochs": 1, "batch_size": 16, "lr": 3e-3, "precision": "fp32", "threads": 1}


def tiny_experiment(path, name: str, data: str, *, encode: dict | None = None, train: dict | None = None,
                    model: str = "", sweep: str = "", top: str = "") -> str:
    """Write an experiment file of the tiny model and return its path: `data` is the [data] body
    (`two_class_data_toml(...)` and any extra lines), `encode` the [encode] keys, `train` keys over
    TINY_TRAIN, `model` extra [model] lines, `sweep` the [sweep] body ("" = no sweep), `top` extra
    top-level lines (group = ...)."""
    parts = [f"name = {json.dumps(name)}", top, "[data]", data]
    if encode:
        parts += ["[encode]", toml_keys(encode)]
    parts += ["[model]", TINY_MODEL_TOML, model, "[train]", toml_keys({**TINY_TRAIN, **(train or {})})]
    if sweep:
        parts += ["[sweep]", sweep]
    Path(path).write_text("\n".join(p for p in parts if p) + "\n")
    return str(path)


@pytest.fixture
def store(tmp_path):
    from encoderlab.store.runs import RunStore
    s = RunStore(tmp_path / "runs")
    yield s
    s.close()


def real_rows(name: str, split: str, labels: set[str] | None = None, n: int | None = None) -> list[dict]:
    """The first `n` rows of a builtin split (optionally only some labels): real data, small."""
    path = builtin.get(name).files[split]
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if labels is None or row["label"] in labels:
                out.append(row)
            if n and len(out) >= n:
                break
    return out


def small_dictionary(path, rows: list[dict], every: int) -> str:
    """A small but real dictionary csv for ranking `rows`: the wordnet-linking entries that are their
    gold, plus every `every`-th entry read from their domains. Returns the path."""
    import pandas as pd
    gold, domains = {r["gold"] for r in rows}, {r["domain"] for r in rows}
    entries = []
    with gzip.open(builtin.get("wordnet-linking").dictionary, "rt", encoding="utf-8") as fh:
        for line in fh:
            e = json.loads(line)
            if e["id"] in gold or (e["domain"] in domains and len(entries) % every == 0):
                entries.append(e)
    pd.DataFrame(entries).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="session")
def two_class_csv(tmp_path_factory):
    """Real WordNet glosses of two categories (animals vs artifacts) as train/validation/test csv."""
    import pandas as pd
    folder = tmp_path_factory.mktemp("two_class")
    keep = {"noun.animal", "noun.artifact"}
    for split, n in (("train", 400), ("validation", 80), ("test", 80)):
        rows = real_rows("wordnet-lexname", split, keep, n)
        pd.DataFrame({"gloss": [r["text"] for r in rows], "category": [r["label"] for r in rows]}) \
            .to_csv(folder / f"{split}.csv", index=False)
    return folder


def tiny_config(folder, **overrides) -> C.ExperimentConfig:
    raw = {"name": "tiny",
           "data": {"source": str(folder / "train.csv"), "validation": str(folder / "validation.csv"),
                    "test": str(folder / "test.csv"), "text": "gloss", "label": "category"},
           "encode": {"max_length": 48},
           "model": dict(TINY_MODEL),
           "train": {"epochs": 3, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.1, "precision": "fp32",
                     "threads": 1}}
    for k, v in overrides.items():
        C.set_dotted(raw, k.replace("__", "."), v)
    return C.from_dict(C.ExperimentConfig, raw)


@pytest.fixture(scope="session")
def tiny_teacher(two_class_csv, tmp_path_factory):
    """A completed tiny fine-tuning run on real glosses, in its own store: the parent of the
    compression tests (truncate, quantize, export, distill, bench)."""
    from encoderlab.store.runs import RunStore
    from encoderlab.train.fit import fit
    store = RunStore(tmp_path_factory.mktemp("teacher") / "runs")
    run = fit(tiny_config(two_class_csv, name="teacher"), store, progress=False)
    yield store, run
    store.close()


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def senses_files(tmp_path_factory):
    """Real ranking contexts: 24 train / 12 validation / 12 test of wordnet-senses, and a small
    dictionary of their domains (files, by split name and "dictionary")."""
    folder = tmp_path_factory.mktemp("senses")
    rows = {s: real_rows("wordnet-senses", s, n=n) for s, n in (("train", 24), ("validation", 12), ("test", 12))}
    return {s: write_jsonl(folder / f"{s}.jsonl", r) for s, r in rows.items()} | {
        "dictionary": small_dictionary(folder / "dictionary.csv", [r for rs in rows.values() for r in rs], 50)}
