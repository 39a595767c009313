"""encode.long: which tokens of a long text the model sees, windows (chunks) and their pooling back
to documents, the cut/dropped report, config errors, and end-to-end runs on real long documents."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import real_rows, tiny_config
from encoderlab import config as C
from encoderlab.analysis import diagnose as D
from encoderlab.data.dataset import Split
from encoderlab.encode.long import Windows, for_training, select, window_starts
from encoderlab.encode.text import Encoded, encode_split
from encoderlab.errors import ConfigError
from encoderlab.models import registry
from encoderlab.train.fit import fit
from encoderlab.train.loop import predict_logits


def _tok():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(registry.resolve("builtin:minilm-l6"))


def _split(texts, labels=None):
    return Split("train", list(texts), None,
                 np.asarray(labels if labels is not None else np.arange(len(texts)) % 2, dtype=np.int64))


def test_window_starts_by_hand():
    # windows of 14 text tokens overlapping by 4: they start every 10 tokens
    assert window_starts(0, 14, 4) == [0]
    assert window_starts(14, 14, 4) == [0]              # fits: one window
    assert window_starts(15, 14, 4) == [0, 10]          # [0, 14) + [10, 15)
    assert window_starts(24, 14, 4) == [0, 10]          # [10, 24) reaches the end exactly
    assert window_starts(25, 14, 4) == [0, 10, 20]
    assert window_starts(30, 10, 0) == [0, 10, 20]      # no overlap
    assert window_starts(11, 10, 9) == [0, 1]           # overlap of all but one token


def test_select_head_tail_head_plus_tail_by_hand():
    t = np.arange(100)
    assert select(t[:8], 10, "tail").tolist() == list(range(8))      # short texts are kept whole
    assert select(t, 10, "head").tolist() == list(range(10))
    assert select(t, 10, "tail").tolist() == list(range(90, 100))
    # a quarter of the budget from the head (2 of 10), the rest from the tail
    assert select(t, 10, "head+tail").tolist() == [0, 1] + list(range(92, 100))


def test_policies_on_real_glosses_and_what_they_report():
    tok = _tok()
    rows = [r for r in real_rows("wordnet-lexname", "train", n=400) if len(r["text"].split()) > 20][:20]
    split = _split([r["text"] for r in rows])
    whole = [tok(t, add_special_tokens=False)["input_ids"] for t in split.texts]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    head = encode_split(tok, split, 16, "longest_first")
    # the default keeps exactly what the tokenizer's own truncation kept before encode.long existed
    ref = tok(split.texts, truncation=True, max_length=16)["input_ids"]
    assert [x.tolist() for x in head.ids] == ref
    tail = encode_split(tok, split, 16, "longest_first", "tail")
    both = encode_split(tok, split, 16, "longest_first", "head+tail")
    for w, t, b in zip(whole, tail.ids, both.ids):
        assert t.tolist() == [cls] + w[-14:] + [sep]
        assert b.tolist() == [cls] + w[:3] + w[-11:] + [sep]       # 14 // 4 = 3 from the head
    full = np.array([len(w) for w in whole])
    cut = full > 14
    assert head.stats["cut"] == tail.stats["cut"] == int(cut.sum()) > 0
    assert head.stats["dropped_share"] == pytest.approx((full - np.minimum(full, 14)).sum() / full.sum())
    chunks = encode_split(tok, split, 16, "longest_first", "chunks", 4)
    assert isinstance(chunks, Windows) and len(chunks) == len(split)
    assert chunks.stats["dropped_share"] == 0.0
    counts = [len(window_starts(n, 14, 4)) for n in full]
    assert chunks.counts.tolist() == counts and chunks.stats["windows_max"] == max(counts)
    # the windows of a document, overlaps removed, are the document
    for d, w in enumerate(whole):
        parts = [chunks.win.ids[i][1:-1].tolist() for i in np.flatnonzero(chunks.doc == d)]
        assert parts[0] + [x for p in parts[1:] for x in p[4:]] == w
        mine = np.flatnonzero(chunks.doc == d)
        assert all(chunks.win.ids[i][0] == cls and chunks.win.ids[i][-1] == sep for i in mine)


def test_sampled_windows_are_seeded_and_one_per_document():
    tok = _tok()
    rows = real_rows("wordnet-lexname", "train", n=300)
    chunks = encode_split(tok, _split([r["text"] for r in rows]), 12, "longest_first", "chunks", 2)
    a, b, c = chunks.sample(7), chunks.sample(7), chunks.sample(8)
    assert len(a) == len(rows) and [x.tolist() for x in a.ids] == [x.tolist() for x in b.ids]
    assert [x.tolist() for x in a.ids] != [x.tolist() for x in c.ids]
    first = np.concatenate([[0], np.cumsum(chunks.counts)[:-1]])
    for d, ids in enumerate(a.ids):    # each pick is one of its own document's windows
        mine = [chunks.win.ids[first[d] + k].tolist() for k in range(chunks.counts[d])]
        assert ids.tolist() in mine
    assert for_training(a, 3) is a     # a plain split trains as it is


def test_pooling_windows_back_to_documents():
    win = Encoded([np.array([1, 2])] * 5, None, np.array([2] * 5), np.array([0, 0, 1, 1, 1]), 0)
    w = Windows(win, np.array([0, 0, 1, 1, 1]), np.array([0, 1]), "mean")
    logits = np.array([[1., 0.], [3., 4.], [0., 0.], [3., -3.], [6., 0.]], dtype=np.float32)
    np.testing.assert_allclose(w.pool_logits(logits), [[2., 2.], [3., -1.]])
    w.pool = "max"
    np.testing.assert_allclose(w.pool_logits(logits), [[3., 4.], [6., 0.]])
    w.labels = np.array([5, 6])      # the task's training scale reaches every window
    assert w.win.labels.tolist() == [5, 5, 6, 6, 6]


def test_predict_logits_scores_every_window_and_pools(two_class_csv):
    from encoderlab.train.classify import setup
    s = setup(tiny_config(two_class_csv, encode__max_length=12, encode__long="chunks", encode__stride=3,
                          encode__pool="max"))
    enc = s.enc["validation"]
    assert isinstance(enc, Windows) and len(enc.win) > len(enc)
    per_window = predict_logits(s.model, enc.win, 64, s.device, "fp32")
    per_doc = predict_logits(s.model, enc, 64, s.device, "fp32")
    assert per_doc.shape == (len(enc), 2)
    for d in range(len(enc)):
        np.testing.assert_allclose(per_doc[d], per_window[enc.doc == d].max(0), rtol=1e-6)
    assert s.enc["train"].stats["cut"] > 0


def test_config_errors_name_the_key(two_class_csv):
    with pytest.raises(ConfigError, match="encode.long: 'middle' is not one of .*head"):
        C.load(None, ["encode.long=middle"])
    with pytest.raises(ConfigError, match="encode.stride = 14 must be below encode.max_length - 2 = 14"):
        C.load(None, ["encode.long=chunks", "encode.max_length=16", "encode.stride=14"])
    with pytest.raises(ConfigError, match="encode.stride: -1 is out of range"):
        C.load(None, ["encode.stride=-1"])
    with pytest.raises(ConfigError, match="encode.pool: 'sum'"):
        C.load(None, ["encode.pool=sum"])
    rows = real_rows("wordnet-usage", "train", n=10)
    pairs = Split("train", [r["text_a"] for r in rows], [r["text_b"] for r in rows], np.zeros(10, dtype=np.int64))
    with pytest.raises(ConfigError, match="encode.long = 'chunks' applies to single texts"):
        encode_split(_tok(), pairs, 32, "longest_first", "chunks", 4)
    assert encode_split(_tok(), pairs, 16, "longest_first").stats["cut"] > 0   # pairs report their cut too


def test_defaults_keep_the_config_hash():
    cfg = C.ExperimentConfig()
    assert C.config_hash(cfg) == "c69478402b17c281"     # the hash before encode.long/stride/pool existed
    assert C.config_hash(C.replace(cfg, encode__max_length=16)) == "73bb288168e36f81"
    assert C.config_hash(C.replace(cfg, encode__long="tail")) != C.config_hash(cfg)
    chunks = C.replace(cfg, encode__long="chunks")
    assert C.config_hash(C.replace(chunks, encode__pool="max")) != C.config_hash(chunks)


def test_chunks_resume_to_the_same_result(two_class_csv, tmp_path):
    """Sampled windows come from (seed, epoch): a run killed mid-epoch resumes to the same weights."""
    from encoderlab.store.runs import RunStore
    cfg = tiny_config(two_class_csv, train__epochs=2, train__eval_every_steps=10, encode__max_length=12,
                      encode__long="chunks", encode__stride=3)
    straight = fit(cfg, RunStore(tmp_path / "a"), progress=False)
    store = RunStore(tmp_path / "b")

    def boom(ev):
        if ev["split"] == "validation" and ev["step"] == 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, store, callback=boom, progress=False)
    run = store.get("last")
    resumed = fit(cfg, store, resume=run, progress=False)
    a = load_file(str(straight.dir / "model" / "head.safetensors"))
    b = load_file(str(resumed.dir / "model" / "head.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_truncation_diagnostic_suggests_encode_long(two_class_csv, store):
    run = fit(tiny_config(two_class_csv, encode__max_length=12, train__epochs=1, train__max_steps=2), store,
              progress=False)
    data = run.info["data"]
    assert data["long"] == "head" and data["cut"]["train"] > 0.1 * data["sizes"]["train"]
    f = next(f for f in D.diagnose(run) if f.code == "truncation")
    assert "encode.long (now head" in f.fix and f"{100 * data['cut_share']['train']:.1f}%" in f.evidence
    chunks = fit(tiny_config(two_class_csv, encode__max_length=12, encode__long="chunks", encode__stride=3,
                             train__epochs=1, train__max_steps=2), store, progress=False)
    assert "truncation" not in {f.code for f in D.diagnose(chunks)}
    w = chunks.info["data"]["windows"]["train"]
    assert w["max"] >= 2 and w["mean"] > 1 and chunks.info["data"]["dropped_share"]["train"] == 0.0


def test_cli_chunks_on_real_man_pages_run_show_predict(tmp_path, capsys):
    """Real long documents (Linux manual pages) end to end: run with chunks, show reports windows,
    predict gives one row per page and matches the run's own test predictions."""
    import pandas as pd
    from conftest import tiny_experiment
    from encoderlab.cli import main
    for split, n in (("train", 60), ("validation", 20), ("test", 20)):
        rows = real_rows("manpages-section", split, {"syscall", "libfunc"}, n)
        pd.DataFrame({"page": [r["text"][:1500] for r in rows], "section": [r["label"] for r in rows]}) \
            .to_csv(tmp_path / f"{split}.csv", index=False)
    exp = tmp_path / "exp.toml"
    files = {f: (tmp_path / f"{f}.csv").as_posix() for f in ("train", "validation", "test")}
    tiny_experiment(exp, "long-e2e", f'source = "{files["train"]}"\nvalidation = "{files["validation"]}"\n'
                                     f'test = "{files["test"]}"\ntext = "page"\nlabel = "section"',
                    encode={"max_length": 32, "long": "chunks", "stride": 8})
    store = str(tmp_path / "runs")
    assert main(["--store", store, "run", str(exp), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["--store", store, "runs", "--format", "json"]) == 0
    run_id = json.loads(capsys.readouterr().out)[0]["id"]
    assert main(["--store", store, "show", run_id]) == 0
    out = capsys.readouterr().out
    assert "long texts (encode.long = chunks): longer than one window train 100.0%" in out
    assert "windows per document train mean" in out and "no text dropped" in out
    preds = tmp_path / "preds.csv"
    assert main(["--store", store, "predict", run_id, str(tmp_path / "test.csv"), "-o", str(preds)]) == 0
    df = pd.read_csv(preds)
    assert len(df) == 20 and set(df["predicted"]) <= {"syscall", "libfunc"}
    stored = pd.read_csv(tmp_path / "runs" / run_id / "predictions" / "test.csv")
    assert (stored["predicted"] == df["predicted"]).all()
    np.testing.assert_allclose(stored["p_syscall"], df["p_syscall"], atol=1e-5)


def test_multilabel_runs_with_chunks_and_predicts_per_document(tmp_path, store):
    """Another task kind: label sets of real wordnet-multilex rows, windows pooled per example."""
    import pandas as pd
    from encoderlab import predict as P
    for split, n in (("train", 200), ("validation", 60), ("test", 60)):
        r = real_rows("wordnet-multilex", split, n=n)
        pd.DataFrame({"text": [x["text"] for x in r], "labels": [x["labels"] for x in r]}) \
            .to_csv(tmp_path / f"{split}.csv", index=False)
    cfg = tiny_config(tmp_path, data__text="text", data__label="labels", data__task="multilabel",
                      encode__max_length=12, encode__long="chunks", encode__stride=2, encode__pool="max",
                      train__epochs=1)
    run = fit(cfg, store, progress=False)
    assert run.status == "completed" and run.info["data"]["windows"]["test"]["max"] >= 2
    out, scores = P.predict(run, str(tmp_path / "test.csv"))
    stored = pd.read_csv(run.dir / "predictions" / "test.csv")
    assert len(out) == len(stored) == 60 and "micro_f1" in scores
    assert (out["predicted"].fillna("") == stored["predicted"].fillna("")).all()


def test_eval_checkpoints_scores_documents_as_the_run_did(two_class_csv, store):
    """Re-scoring the best checkpoint of a chunks run gives the run's own test accuracy (documents,
    windows pooled), not a per-window number."""
    from encoderlab.analysis.tables import final_scores
    from encoderlab.evaluate import eval_checkpoints
    run = fit(tiny_config(two_class_csv, encode__max_length=12, encode__long="chunks", encode__stride=3,
                          train__epochs=1, train__keep_final_checkpoints=True), store, progress=False)
    rows = eval_checkpoints(run, "test", which="best", progress=False)
    assert rows[0]["accuracy"] == pytest.approx(final_scores(run)["test"]["accuracy"])
    events = [e for e in run.events() if e["split"] == "eval:test"]
    assert events[-1]["detail"]["examples"] == 80      # documents, not windows
