"""Numeric sequences: readers (npz/npy, list columns, long form, images), NaN policy, the four
input schemes, fitting on train only, end-to-end runs and predict on raw arrays."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_MODEL
from encoderlab import config as C
from encoderlab.data import builtin
from encoderlab.data.dataset import Split, load_data
from encoderlab.data.series import read_series_split
from encoderlab.encode import series
from encoderlab.errors import ConfigError, DataError

SEQ = C.DataConfig(task="sequence", text="x", label="y")


def _bm(split="train"):
    return np.load(builtin.get("basic-motions").files[split])


def _vowels():
    return np.load(builtin.get("japanese-vowels").files["train"])


# -- readers -----------------------------------------------------------------------------------

def test_npz_regular_and_ragged_builtins():
    s, names = read_series_split(str(builtin.get("basic-motions").files["train"]), SEQ, "train", None)
    assert len(s) == 40 and s.series[0].shape == (6, 100) and names == ["badminton", "running", "standing", "walking"]
    v, _ = read_series_split(str(builtin.get("japanese-vowels").files["train"]), SEQ, "train", None)
    lengths = {a.shape[1] for a in v.series}
    assert len(v) == 270 and {a.shape[0] for a in v.series} == {12} and min(lengths) < max(lengths)
    d, _ = read_series_split(str(builtin.get("digits").files["test"]), SEQ, "test", None)
    assert d.series[0].shape == (1, 8, 8) and d.series[0].max() <= 255


def test_npy_is_values_only(tmp_path):
    np.save(tmp_path / "x.npy", _bm()["x"][:5])
    s, names = read_series_split(str(tmp_path / "x.npy"), SEQ, "predict", ["a"], require_labels=False)
    assert len(s) == 5 and (s.labels == -1).all() and names == []
    with pytest.raises(DataError, match="label"):
        read_series_split(str(tmp_path / "x.npy"), SEQ, "train", None)


def test_npz_refuses_pickled_objects(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([np.zeros(3), np.zeros(4)], dtype=object), y=np.array(["a", "b"]))
    with pytest.raises(DataError, match="object arrays are refused"):
        read_series_split(str(tmp_path / "o.npz"), SEQ, "train", None)


def test_list_column_jsonl_parquet_csv_agree(tmp_path):
    bm = _bm()
    rows = [{"x": bm["x"][i].tolist(), "y": str(bm["y"][i])} for i in range(6)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame({"x": [r["x"] for r in rows], "y": [r["y"] for r in rows]}).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame({"x": [json.dumps(r["x"]) for r in rows], "y": [r["y"] for r in rows]}).to_csv(tmp_path / "a.csv",
                                                                                                index=False)
    got = [read_series_split(str(tmp_path / f), SEQ, "train", None)[0] for f in ("a.jsonl", "a.parquet", "a.csv")]
    for s in got:
        assert s.series[0].shape == (6, 100)
        np.testing.assert_allclose(s.series[3], bm["x"][3], rtol=1e-6)


def test_flat_images_with_shape(tmp_path):
    d = np.load(builtin.get("digits").files["test"])
    pd.DataFrame({"pixels": [im.reshape(-1).tolist() for im in d["x"][:4]], "y": d["y"][:4]}).to_parquet(
        tmp_path / "img.parquet")
    cfg = C.DataConfig(task="sequence", text="pixels", label="y", image_shape=(8, 8))
    s, _ = read_series_split(str(tmp_path / "img.parquet"), cfg, "train", None)
    assert s.series[2].shape == (1, 8, 8) and (s.series[2][0] == d["x"][2]).all()
    with pytest.raises(DataError, match=r"do not make an image of shape \(7, 7\)") as e:
        read_series_split(str(tmp_path / "img.parquet"),
                          C.DataConfig(task="sequence", text="pixels", label="y", image_shape=(7, 7)), "train", None)
    assert e.value.row == 1


def _long_frame(n=4):
    """Japanese vowels (variable length) in long form: one row per step, shuffled rows."""
    v = _vowels()
    parts = np.split(v["x"], np.cumsum(v["x_lengths"])[:-1], axis=1)
    frames = []
    for i in range(n):
        a = parts[i]
        f = pd.DataFrame(a.T, columns=[f"c{j}" for j in range(12)])
        f.insert(0, "t", np.arange(a.shape[1]))
        f.insert(0, "utt", f"u{i}")
        f["speaker"] = v["y"][i]
        frames.append(f)
    return pd.concat(frames).sample(frac=1.0, random_state=0), parts


def test_long_form_groups_and_orders_steps(tmp_path):
    df, parts = _long_frame()
    df.to_csv(tmp_path / "long.csv", index=False)
    cfg = C.DataConfig(task="sequence", label="speaker", id_column="utt", time_column="t")
    s, _ = read_series_split(str(tmp_path / "long.csv"), cfg, "train", None)
    assert sorted(s.texts) == ["u0", "u1", "u2", "u3"]
    i = s.texts.index("u2")
    np.testing.assert_allclose(s.series[i], parts[2], rtol=1e-5)        # variable length kept


def test_long_form_errors_name_row_and_field(tmp_path):
    df, _ = _long_frame(2)
    df = df.reset_index(drop=True)
    df.loc[3, "speaker"] = "other"
    df.to_csv(tmp_path / "bad.csv", index=False)
    cfg = C.DataConfig(task="sequence", label="speaker", id_column="utt", time_column="t")
    with pytest.raises(DataError, match="more than one label") as e:
        read_series_split(str(tmp_path / "bad.csv"), cfg, "train", None)
    assert e.value.field == "speaker" and e.value.row is not None
    df2, _ = _long_frame(2)
    df2 = df2.astype({"c3": object}).reset_index(drop=True)
    df2.loc[5, "c3"] = "n/a?"
    df2.to_csv(tmp_path / "bad2.csv", index=False)
    with pytest.raises(DataError, match="not a number") as e:
        read_series_split(str(tmp_path / "bad2.csv"), cfg, "train", None)
    assert (e.value.row, e.value.field) == (6, "c3")


def test_nan_policy(tmp_path):
    x = _bm()["x"][:3].copy()
    x[1, 2, 10:13] = np.nan
    np.savez(tmp_path / "n.npz", x=x, y=np.array(["a", "b", "a"]))
    with pytest.raises(DataError, match="missing or infinite value at channel 2, step 10 ") as e:
        read_series_split(str(tmp_path / "n.npz"), SEQ, "train", None)
    assert e.value.row == 2
    x = x.astype(np.float64)
    x[1, 2, 10:13] = 0.0
    x[0, 1, 4] = 1e300                                      # beyond float32: inf, reported the same way
    np.savez(tmp_path / "big.npz", x=x, y=np.array(["a", "b", "a"]))
    with pytest.raises(DataError, match="channel 1, step 4 ") as e:
        read_series_split(str(tmp_path / "big.npz"), C.DataConfig(task="sequence"), "train", None)
    assert e.value.row == 1 and e.value.field == "x"
    s, _ = read_series_split(str(tmp_path / "n.npz"), C.DataConfig(task="sequence", text="x", label="y",
                                                                    nan="interpolate"), "train", None)
    filled = s.series[1][2, 9:14]
    assert np.isfinite(filled).all()
    np.testing.assert_allclose(filled[1:4], np.linspace(filled[0], filled[4], 5)[1:4], rtol=1e-5)
    z, _ = read_series_split(str(tmp_path / "n.npz"), C.DataConfig(task="sequence", text="x", label="y",
                                                                    nan="zero"), "train", None)
    assert (z.series[1][2, 10:13] == 0).all()


# -- schemes -----------------------------------------------------------------------------------

def _tokenizer():
    """MiniLM's real tokenizer (encode() needs its special ids; extend() adds the scheme's tokens)."""
    from transformers import AutoTokenizer
    from encoderlab.models import registry
    return AutoTokenizer.from_pretrained(registry.resolve("builtin:minilm-l6"))


def _split(name="train"):
    s, _ = read_series_split(str(builtin.get("basic-motions").files[name]), SEQ, name, None)
    return s


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
def test_bins_fitted_on_train_only(binning):
    train, test = _split("train"), _split("test")
    cfg = C.SeriesConfig(scheme="bins", bins=8, binning=binning, pool=4)
    state = series.fit(cfg, train)
    shifted = Split("test", test.texts, None, test.labels, series=[a * 100 for a in test.series])
    assert series.fit(cfg, train)["edges"] == state["edges"]          # deterministic, train only
    tok = _tokenizer()
    series.extend(state, tok, _FakeModel(len(tok)))
    enc = series.encode(state, train, tok, 512)
    assert enc.lengths[0] == 6 * 25 + 2                                  # time-major C x T/pool + CLS/SEP
    ids = np.concatenate(enc.ids)
    new = set(tok.convert_tokens_to_ids(state["tokens"]))
    assert set(ids) - {tok.cls_token_id, tok.sep_token_id} <= new
    if binning == "quantile":     # quantile bins are roughly equally filled on train
        counts = np.bincount(np.concatenate([i[1:-1] for i in enc.ids]) - min(new), minlength=48)
        assert counts.min() > 0.5 * counts.mean()
    out = series.encode(state, shifted, tok, 512)     # extreme test values land in the end bins
    assert out.lengths[0] == enc.lengths[0]


class _FakeModel:
    """Only the embedding-size surface extend() touches for token schemes."""

    def __init__(self, n):
        import torch
        self.encoder = type("E", (), {})()
        emb = torch.nn.Embedding(n, 4)
        self.encoder.get_input_embeddings = lambda: emb
        self.encoder.resize_token_embeddings = lambda m: setattr(self, "resized", m)


def test_grid_and_sax_tokens():
    train = _split()
    tok = _tokenizer()
    g = series.fit(C.SeriesConfig(scheme="grid", cells=4, axes=3, select=3), train)
    assert len(g["tokens"]) == 64
    series.extend(g, tok, _FakeModel(len(tok)))
    enc = series.encode(g, train, tok, 512)
    assert enc.lengths[0] == 100 + 2 and len(set(np.concatenate([i[1:-1] for i in enc.ids]))) > 8
    with pytest.raises(ConfigError, match="grid"):
        series.fit(C.SeriesConfig(scheme="grid", axes=3), _digits_split())
    sx = series.fit(C.SeriesConfig(scheme="sax", alphabet=5, segment=10), train)
    series.extend(sx, tok, _FakeModel(len(tok)))
    enc = series.encode(sx, train, tok, 512)
    assert enc.lengths[0] == 6 * 10 + 2
    # z-normalised letters: every letter of a channel is used across the train set
    letters = (np.concatenate([i[1:-1] for i in enc.ids]) - min(tok.convert_tokens_to_ids(sx["tokens"]))) % 5
    assert set(letters) == set(range(5))


def _digits_split():
    s, _ = read_series_split(str(builtin.get("digits").files["test"]), SEQ, "test", None)
    return s


def test_patches_series_variable_length_and_images():
    tok = _tokenizer()
    v, _ = read_series_split(str(builtin.get("japanese-vowels").files["train"]), SEQ, "train", None)
    st = series.fit(C.SeriesConfig(scheme="patch", patch=4), v)
    enc = series.encode(st, v, tok, 512)
    for a, f, n in zip(v.series[:20], enc.feats, enc.lengths):
        assert f.shape == (int(np.ceil(a.shape[1] / 4)), 12 * 4) and n == len(f) + 2
    d = _digits_split()
    st = series.fit(C.SeriesConfig(scheme="patch", patch=4, normalize="none"), d)
    enc = series.encode(st, d, tok, 512)
    assert enc.feats[0].shape == (4, 16)
    np.testing.assert_allclose(enc.feats[0][1], d.series[0][0, 0:4, 4:8].reshape(-1))   # raster patch order
    b = enc.batch(np.arange(3))
    assert b["patches"].shape == (3, 6, 16) and b["patch_mask"][:, 1:5].all() and not b["patch_mask"][:, [0, 5]].any()


def test_channel_mismatch_is_a_clear_error():
    train = _split()
    st = series.fit(C.SeriesConfig(scheme="patch", select=3), train)
    with pytest.raises(DataError, match="fitted on series data with 3 channels"):
        series.encode(st, _digits_split(), _tokenizer(), 512)
    with pytest.raises(ConfigError, match="7 but the data has 6"):
        series.fit(C.SeriesConfig(select=7), train)


# -- end to end --------------------------------------------------------------------------------

def _exp(tmp_path, scheme, **series_kw):
    raw = {"name": f"bm-{scheme}", "data": {"source": "builtin:basic-motions", "validation_fraction": 0.25},
           "model": dict(TINY_MODEL), "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "threads": 1},
           "series": {"scheme": scheme, **series_kw}}
    return C.from_dict(C.ExperimentConfig, raw)


@pytest.mark.parametrize("scheme,kw", [("bins", {"pool": 4, "bins": 8}), ("grid", {"axes": 3, "cells": 4}),
                                       ("sax", {"segment": 5}), ("patch", {"patch": 10})])
def test_each_scheme_trains_and_predicts_raw_series(tmp_path, scheme, kw):
    from encoderlab.predict import predict
    from encoderlab.store.runs import RunStore
    from encoderlab.train.fit import fit
    store = RunStore(tmp_path / "runs")
    run = fit(_exp(tmp_path, scheme, **kw), store, progress=False)
    assert run.status == "completed"
    meta = json.loads((run.dir / "model" / "encoderlab.json").read_text())
    assert meta["series"]["scheme"] == scheme and "mean" in meta["series"]      # fitted state stored
    df, scores = predict(run, str(builtin.get("basic-motions").files["test"]))
    assert len(df) == 40 and scores["accuracy"] == pytest.approx(run.info["test_accuracy"])


def test_baselines_on_real_series():
    from encoderlab import baselines
    rows = {r["method"]: r for r in baselines.run(_exp(None, "bins"), ("majority", "logreg"))}
    assert rows["majority"]["test_accuracy"] == 0.25
    assert rows["logreg"]["test_accuracy"] > 0.5        # 4 balanced classes: well above chance


def test_load_data_splits_validation_off_train():
    data, _ = load_data(C.DataConfig(source="builtin:japanese-vowels", validation_fraction=0.2))
    assert data.task == "sequence" and len(data.validation) == 54 and len(data.test) == 370


def test_own_vocabulary_has_only_specials_and_scheme_tokens(tmp_path):
    from encoderlab.predict import predict
    from encoderlab.store.runs import RunStore
    from encoderlab.train.fit import fit
    cfg = C.replace(_exp(tmp_path, "bins", pool=4, bins=8), series__vocabulary="own")
    run = fit(cfg, RunStore(tmp_path / "runs"), progress=False)
    vocab = json.loads((run.dir / "model" / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocab) == 5 + 6 * 8 and vocab["[CLS]"] == 2
    weights = json.loads((run.dir / "model" / "config.json").read_text())
    assert weights["vocab_size"] == 5 + 6 * 8
    _, scores = predict(run, str(builtin.get("basic-motions").files["test"]))
    assert scores["accuracy"] == pytest.approx(run.info["test_accuracy"])
    with pytest.raises(ConfigError, match="model.init"):
        fit(C.replace(cfg, model__init="pretrained", model__num_layers=1, model__hidden_size=0,
                      model__num_heads=0, model__intermediate_size=0), RunStore(tmp_path / "r2"), progress=False)
