"""Hostile and malformed input, generated: every reader (csv, tsv, jsonl, parquet, npz/npy, ranking
jsonl) and the config loader either accept the input or raise an EncoderlabError (DataError /
ConfigError) that names the file — never any other exception, never a crash inside torch.
Accepted text data is also tokenized, where long or odd text would surface. Also the long forms
(ranking csv with a group column, series with one row per time step), dictionary files and the
input of `predict` on a trained run."""

from __future__ import annotations

import json
import math
import os
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from encoderlab import config as C
from encoderlab.data.dataset import load_data
from encoderlab.errors import ConfigError, DataError, EncoderlabError

FUZZ = settings(max_examples=int(os.environ.get("ENCODERLAB_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# hostile text: NUL bytes, quotes, separators, newlines, lone surrogates are not UTF-8-encodable
# and are kept out of *text* (they are covered by the raw-bytes strategies)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60) | \
    st.sampled_from(["", " ", "\x00", '"', '""', ",", "\t", "\n", "\r\n", "a,b", "x" * 5000, "🙂" * 50, "nan",
                     "NaN", "null", "None", "1e309", "-0", "\\"])
VALUE = st.one_of(TEXT, st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                  st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from encoderlab.models import registry
    return AutoTokenizer.from_pretrained(registry.resolve("builtin:minilm-l6"))


def _expect_clean(fn, path: Path):
    """Run fn; an EncoderlabError must name the file (or a config key); anything else fails."""
    try:
        return fn()
    except DataError as e:
        msg = str(e)
        assert path.name in msg or "data." in msg or "column" in msg, msg
    except ConfigError:
        pass
    except EncoderlabError:
        pass
    return None


def _text_cfg(folder: Path, train: Path, **kw) -> C.DataConfig:
    return C.from_dict(C.DataConfig, {"source": str(train), "text": "text", "label": "label", **kw})


def _tokenize(data, tokenizer):
    from encoderlab.encode.text import encode_split
    for split in (data.train, data.validation, data.test):
        enc = encode_split(tokenizer, split, 64, "longest_first")
        assert len(enc) == len(split.texts) and int(enc.lengths.max()) <= 64


def _rows_to_csv(rows, sep: str) -> bytes:
    return ("\n".join(sep.join(str(c) for c in r) for r in rows) + "\n").encode("utf-8", "surrogatepass")


CSV_ROWS = st.lists(st.lists(TEXT, min_size=0, max_size=4), min_size=0, max_size=12)


@FUZZ
@given(header=st.sampled_from([["text", "label"], ["label", "text"], ["txt", "label"], ["text"], []]),
       rows=CSV_ROWS, raw=st.none() | st.binary(max_size=400), sep=st.sampled_from([",", "\t"]),
       gz=st.booleans())
@example(header=["text", "label"], rows=[[f"gloss {i} \x00 'q'" + "x" * (i * 300), "ab"[i % 2]] for i in range(40)],
         raw=None, sep=",", gz=True)        # accepted: split, then tokenized (long texts truncated)
def test_delimited_files(header, rows, raw, sep, gz, tokenizer):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("train.csv" if sep == "," else "train.tsv")
        body = raw if raw is not None else _rows_to_csv([header] + rows, sep)
        if gz:
            import gzip
            path = path.with_name(path.name + ".gz")
            body = gzip.compress(body)
        path.write_bytes(body)
        data = _expect_clean(lambda: load_data(_text_cfg(Path(tmp), path))[0], path)
        if data is not None:
            _tokenize(data, tokenizer)
        if header == ["text", "label"] and len(rows) == 40:
            assert data is not None


@FUZZ
@given(records=st.lists(st.one_of(
           st.fixed_dictionaries({"text": VALUE, "label": VALUE}),
           st.dictionaries(st.sampled_from(["text", "label", "id", "extra"]), VALUE, max_size=4),
           st.sampled_from(["[1, 2]", "null", "{", "\"text\"", "{\"text\": \"a\", \"label\": NaN}", ""])),
           min_size=0, max_size=15))
@example(records=[{"text": f"t{i} " * (i + 1), "label": i % 3} for i in range(45)])
def test_jsonl_files(records, tokenizer):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        path.write_text("\n".join(lines), encoding="utf-8")
        data = _expect_clean(lambda: load_data(_text_cfg(Path(tmp), path))[0], path)
        if data is not None:
            _tokenize(data, tokenizer)
        if len(records) == 45 and all(isinstance(r, dict) for r in records):
            assert data is not None and len(data.label_names) == 3


PARQUET_COLUMN = st.one_of(
    st.lists(TEXT, min_size=1, max_size=10), st.lists(st.integers(-1000, 1000), min_size=1, max_size=10),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=10),
    st.lists(st.booleans(), min_size=1, max_size=10), st.lists(st.none() | TEXT, min_size=1, max_size=10),
    st.lists(st.lists(st.integers(0, 9), max_size=3), min_size=1, max_size=10))


@FUZZ
@given(text=PARQUET_COLUMN, label=PARQUET_COLUMN, name=st.sampled_from(["text", "TEXT", "body"]))
def test_parquet_files(text, label, name, tokenizer):
    n = min(len(text), len(label))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        try:
            pd.DataFrame({name: text[:n], "label": label[:n]}).to_parquet(path)
        except Exception:          # noqa: BLE001 - pyarrow cannot store this mix: not our input
            return
        data = _expect_clean(lambda: load_data(_text_cfg(Path(tmp), path))[0], path)
        if data is not None:
            _tokenize(data, tokenizer)


ARRAY = st.one_of(
    st.builds(lambda shape, fill: np.full(shape, fill),
              st.tuples(st.integers(0, 6), st.integers(0, 5)) | st.tuples(st.integers(0, 5), st.integers(1, 3),
                                                                        st.integers(0, 5)),
              st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5) | st.booleans()),
    st.builds(lambda n, seed: np.random.default_rng(seed).normal(size=(n, 7)), st.integers(0, 8),
              st.integers(0, 100)),
    st.builds(lambda n: np.array(["a"] * n), st.integers(0, 5)),
    st.builds(lambda n: np.arange(n, dtype=np.int64), st.integers(0, 5)))


@FUZZ
@given(x=ARRAY, y=ARRAY, extra=st.sampled_from([{}, {"x_lengths": np.array([3, -1])},
                                                {"x_lengths": np.array([2.5])}, {"x": None}]),
       npy=st.booleans(), objects=st.booleans())
def test_numpy_files(x, y, extra, npy, objects):
    with tempfile.TemporaryDirectory() as tmp:
        if npy:
            path = Path(tmp) / "train.npy"
            np.save(path, np.array([x, None], dtype=object) if objects else x, allow_pickle=objects)
        else:
            path = Path(tmp) / "train.npz"
            members = {"x": x, "y": y, **{k: v for k, v in extra.items() if v is not None}}
            if objects:
                members["y"] = np.array([{"a": 1}], dtype=object)
            np.savez(path, **members)
        cfg = C.from_dict(C.DataConfig, {"source": str(path), "task": "sequence"})
        _expect_clean(lambda: load_data(cfg)[0], path)


CANDIDATE = st.one_of(TEXT, st.fixed_dictionaries({"id": VALUE, "text": VALUE}), st.integers(), st.none())
RANK_ROW = st.one_of(
    st.fixed_dictionaries({"context": VALUE, "candidates": st.lists(CANDIDATE, max_size=5) | VALUE,
                           "label": VALUE, "domain": VALUE}),
    st.fixed_dictionaries({"context_left": VALUE, "mention": VALUE, "context_right": VALUE,
                           "candidates": st.lists(TEXT, min_size=1, max_size=4), "label": st.integers(-2, 5)}),
    st.dictionaries(st.sampled_from(["context", "candidates", "label", "gold", "domain"]), VALUE, max_size=5))


@FUZZ
@given(rows=st.lists(RANK_ROW, min_size=0, max_size=8))
def test_ranking_jsonl_files(rows):
    from encoderlab.data.ranking import load_ranking
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for split in ("train", "validation", "test"):
            paths[split] = Path(tmp) / f"{split}.jsonl"
            paths[split].write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
        dc = C.from_dict(C.DataConfig, {"source": str(paths["train"]), "validation": str(paths["validation"]),
                                        "test": str(paths["test"])})
        _expect_clean(lambda: load_ranking(dc, C.RankingConfig()), paths["train"])


def _all_keys(cls=C.ExperimentConfig, prefix=""):
    import dataclasses
    import typing
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if C.is_config(hints[f.name]):
            yield from _all_keys(hints[f.name], prefix + f.name + ".")
        else:
            yield prefix + f.name


KEYS = sorted(_all_keys())


@FUZZ
@given(entries=st.lists(st.tuples(st.sampled_from(KEYS) | st.text(min_size=1, max_size=12), VALUE),
                        min_size=1, max_size=6))
def test_config_values_are_checked_before_any_work(entries):
    raw: dict = {}
    for key, value in entries:
        try:
            C.set_dotted(raw, key, value)
        except (ConfigError, TypeError, AttributeError):
            return
    try:
        cfg = C.from_dict(C.ExperimentConfig, raw)
    except ConfigError:
        return
    # accepted: every number is finite and in range, and the config round-trips through TOML
    for key, value in entries:
        if isinstance(value, float):
            assert math.isfinite(value)
    assert C.from_dict(C.ExperimentConfig, tomllib.loads(C.to_toml(cfg))) == cfg


@pytest.mark.parametrize("key,value", [("train.lr", -1e-4), ("train.lr", 0.0), ("train.batch_size", 0),
                                       ("train.epochs", 0), ("train.lr", float("nan")),
                                       ("data.validation_fraction", 1.5), ("train.warmup_ratio", -0.1),
                                       ("encode.max_length", 0), ("ranking.top_k", 0), ("model.head.dropout", 1.0)])
def test_out_of_range_values_are_rejected_with_the_key(key, value):
    raw: dict = {}
    C.set_dotted(raw, key, value)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        C.from_dict(C.ExperimentConfig, raw)


def test_unknown_key_and_wrong_type_name_the_key():
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        C.from_dict(C.ExperimentConfig, {"train": {"lrr": 1e-4}})
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected integer"):
        C.from_dict(C.ExperimentConfig, {"train": {"batch_size": "32"}})


# ---------------------------------------------------------------------------------------------
# the long forms, dictionaries and predict inputs

LONG_RANK_COLUMNS = st.lists(st.sampled_from(["group", "context", "candidate", "label", "domain", "mention"]),
                             min_size=0, max_size=6, unique=True)


@FUZZ
@given(columns=LONG_RANK_COLUMNS, rows=st.lists(st.lists(TEXT | st.sampled_from(["0", "1", "g1", "g2"]),
                                                         min_size=6, max_size=6), max_size=10),
       sep=st.sampled_from([",", "\t"]))
@example(columns=["group", "context", "candidate", "label"],
         rows=[["g1", "a bank by the river", "sloping land", "1", "", ""],
               ["g1", "a bank by the river", "a financial institution", "0", "", ""],
               ["g2", "deposit it at the bank", "sloping land", "0", "", ""],
               ["g2", "deposit it at the bank", "a financial institution", "1", "", ""]], sep=",")
def test_ranking_long_csv_files(columns, rows, sep):
    from encoderlab.data.ranking import read_split
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("train.csv" if sep == "," else "train.tsv")
        path.write_bytes(_rows_to_csv([columns] + [r[:len(columns)] for r in rows], sep))
        split = _expect_clean(lambda: read_split(str(path), "auto", C.RankingConfig(), None, "train"), path)
        if split is not None and split.candidates is not None:
            for labels, cands in zip(split.labels, split.candidates):
                assert 0 <= labels < len(cands)
        if columns == ["group", "context", "candidate", "label"] and len(rows) == 4:
            assert split is not None and split.labels.tolist() == [0, 1]


DICT_ROW = st.fixed_dictionaries({"id": VALUE, "title": VALUE, "description": VALUE, "domain": VALUE}) | \
    st.dictionaries(st.sampled_from(["id", "title", "description", "domain", "extra"]), VALUE, max_size=5)


@FUZZ
@given(rows=st.lists(DICT_ROW, max_size=8), fmt=st.sampled_from(["jsonl", "csv"]))
@example(rows=[{"id": "e1", "title": "bank", "description": "sloping land", "domain": "geo"},
               {"id": "e2", "title": "bank", "description": "a financial institution", "domain": "money"}],
         fmt="csv")
def test_dictionary_files(rows, fmt):
    from encoderlab.data.ranking import read_dictionary
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"dictionary.{fmt}"
        if fmt == "jsonl":
            path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
        else:
            try:
                pd.DataFrame(rows).to_csv(path, index=False)
            except Exception:          # noqa: BLE001 - pandas cannot write this mix: not our input
                return
        d = _expect_clean(lambda: read_dictionary(str(path)), path)
        if d is not None:
            assert len(set(d.ids)) == len(d.ids) == len(d.descriptions) and all(t.strip() for t in d.descriptions)
        if len(rows) == 2 and rows[0].get("id") == "e1":
            assert d is not None and d.text(1) == "bank: a financial institution"


N_LONG = 60    # rows: the accepted example has 20 series of 3 steps


@FUZZ
@given(ids=st.lists(st.sampled_from(["a", "b", "c", ""]) | st.integers(0, 3), min_size=0, max_size=N_LONG),
       values=st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-9, 9) | TEXT,
                       min_size=N_LONG, max_size=N_LONG),
       times=st.lists(st.integers(-3, 3) | st.floats(allow_nan=True) | st.none(), min_size=N_LONG, max_size=N_LONG),
       labels=st.lists(st.sampled_from(["up", "down"]) | VALUE, min_size=N_LONG, max_size=N_LONG),
       with_time=st.booleans(), nan=st.sampled_from(["error", "interpolate", "zero"]))
@example(ids=[f"e{i // 3}" for i in range(N_LONG)], values=[float(i % 7) for i in range(N_LONG)],
         times=[i % 3 for i in range(N_LONG)], labels=[("up", "down")[i // 3 % 2] for i in range(N_LONG)],
         with_time=True, nan="error")
def test_series_long_csv_files(ids, values, times, labels, with_time, nan):
    n = len(ids)
    frame = {"id": ids, "x": values[:n], "label": labels[:n], **({"t": times[:n]} if with_time else {})}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.csv"
        try:
            pd.DataFrame(frame).to_csv(path, index=False)
        except Exception:              # noqa: BLE001
            return
        cfg = C.from_dict(C.DataConfig, {"source": str(path), "task": "sequence", "id_column": "id",
                                         "label": "label", "nan": nan,
                                         **({"time_column": "t"} if with_time else {})})
        data = _expect_clean(lambda: load_data(cfg)[0], path)
        if data is not None:
            for split in (data.train, data.validation, data.test):
                assert all(np.isfinite(np.asarray(a, dtype=float)).all() for a in split.series)
        if ids == [f"e{i // 3}" for i in range(N_LONG)] and nan == "error":
            assert data is not None and sum(len(sp.series) for sp in (data.train, data.validation, data.test)) == 20


@pytest.fixture(scope="module")
def tiny_run(two_class_csv, tmp_path_factory):
    from conftest import tiny_config

    from encoderlab.store.runs import RunStore
    from encoderlab.train.fit import fit
    store = RunStore(tmp_path_factory.mktemp("fuzz-predict") / "runs")
    run = fit(tiny_config(two_class_csv, name="fuzz", **{"train.epochs": 1}), store, progress=False)
    yield run
    store.close()


PREDICT_OK = [["a small dog", "noun.animal"], ["a hammer", "noun.artifact"]]


@settings(max_examples=max(10, FUZZ.max_examples // 3), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(header=st.sampled_from([["gloss", "category"], ["gloss"], ["category", "gloss"], ["text"], []]),
       rows=CSV_ROWS, raw=st.none() | st.binary(max_size=300))
@example(header=["gloss", "category"], rows=PREDICT_OK, raw=None)
def test_predict_inputs(tiny_run, header, rows, raw):
    from encoderlab.predict import predict
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "new.csv"
        path.write_bytes(raw if raw is not None else _rows_to_csv([header] + rows, ","))
        out = _expect_clean(lambda: predict(tiny_run, str(path), device="cpu"), path)
        if out is not None:
            df, scores = out
            assert "predicted" in df.columns and len(df) == len(pd.read_csv(path, keep_default_na=False)) \
                or raw is not None
        if header == ["gloss", "category"] and rows == PREDICT_OK and raw is None:
            assert out is not None and out[1]["accuracy"] in (0.0, 0.5, 1.0)
