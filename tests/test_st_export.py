"""`export --format sentence-transformers`: tiny bi- and cross-encoder runs trained on real
wordnet-senses contexts, exported, loaded back with `SentenceTransformer(path)` / `CrossEncoder(path)`
(offline), and their test-split scores compared with encoderlab's own: same top-1, scores within 1e-4."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, real_rows, small_dictionary
from encoderlab import config as C
from encoderlab.data.ranking import load_ranking
from encoderlab.encode.budget import pair_batch, single_batch
from encoderlab.models import ranking as RM
from encoderlab.train.ranking_common import tokenize_split

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real contexts (20 train / 8 validation / 10 test) with their candidate sense lists."""
    folder = tmp_path_factory.mktemp("st")
    out = {}
    for split, n in (("train", 20), ("validation", 8), ("test", 10)):
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in real_rows("wordnet-senses", split, n=n)))
        out[split] = str(path)
    return out


def cfg_for(files, mode: str, **over) -> C.ExperimentConfig:
    # budgets above every context / gloss of the slice: nothing is cut, so the texts a
    # sentence-transformers user passes give exactly the tokens encoderlab scored
    raw = {"name": f"st-{mode}", "data": {"source": files["train"], "validation": files["validation"],
                                          "test": files["test"]},
           "model": {**TINY_MODEL}, "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 32, "lr": 3e-3,
                                                "precision": "fp32", "threads": 1},
           "ranking": {"mode": mode, "context_tokens": 160, "candidate_tokens": 96, "k_train": 3}}
    cfg = C.from_dict(C.ExperimentConfig, raw)
    return C.replace(cfg, **over) if over else cfg


def _texts(split, i: int) -> str:
    return " ".join(p.strip() for p in (split.left[i], f"[M] {split.mention[i]} [/M]", split.right[i]) if p.strip())


def test_bi_encoder_export_scores_like_encoderlab(files, store):
    from sentence_transformers import SentenceTransformer
    from encoderlab.cost.stexport import export_sentence_transformers
    from encoderlab.train.ranking import run
    cfg = cfg_for(files, "bi", **{"model.head.pooling": "mean"})
    r = run(cfg, store, progress=False)
    check = export_sentence_transformers(r)
    folder = r.dir / "sentence-transformers"
    assert (folder / "modules.json").exists() and json.loads((folder / "export-st.json").read_text()) == check
    # encoderlab's own scores: its tokens, its model, cosine of the pooled vectors
    model, tok = RM.load_biencoder(r.dir / "model", cfg.ranking)
    test = load_ranking(cfg.data, cfg.ranking).test
    t = tokenize_split(tok, test, cfg.ranking, True, reserve=2)
    assert t.ctx.truncated == 0 and t.cand.truncated == 0
    with torch.inference_mode():
        ctx = model.embed_contexts(**single_batch(tok, t.ctx.ids)).numpy()
        cand = model.embed_candidates(**single_batch(tok, t.cand.ids)).numpy()
    st = SentenceTransformer(str(folder), device="cpu")
    names = [type(m).__name__ for m in st]
    assert names == ["Transformer", "Pooling", "Normalize"] and st[1].pooling_mode == "mean"
    uniq = list(dict.fromkeys(c for cs in test.candidates for c in cs))
    st_ctx = st.encode([_texts(test, i) for i in range(len(test))])
    st_cand = st.encode(uniq)
    for i, idx in enumerate(t.cand_index):
        ours = ctx[i] @ cand[idx].T
        theirs = st_ctx[i] @ st_cand[[uniq.index(c) for c in test.candidates[i]]].T
        assert ours.argmax() == theirs.argmax()
        assert np.abs(ours - theirs).max() < 1e-4
    assert check["top1_agreement"] == 1.0 and check["max_abs_score_diff"] < 1e-4
    assert check["contexts"] == len(test)


@pytest.mark.parametrize("over", [{"model.head.type": "mlp", "model.head.hidden": 8, "model.head.pooling": "cls"},
                                  {"ranking.loss": "am-softmax", "model.head.pooling": "mean"}],
                         ids=["mlp-cls-ce", "linear-mean-amsoftmax"])
def test_cross_encoder_export_scores_like_encoderlab(files, store, over):
    from sentence_transformers import CrossEncoder
    from encoderlab.cost.stexport import export_sentence_transformers
    from encoderlab.train.ranking import run
    cfg = cfg_for(files, "cross", **over)
    r = run(cfg, store, progress=False)
    check = export_sentence_transformers(r, r.dir.parent / "ce-export")
    model, tok = RM.load_crossencoder(r.dir / "model", cfg.ranking, cfg.model.head)
    test = load_ranking(cfg.data, cfg.ranking).test
    t = tokenize_split(tok, test, cfg.ranking, True, reserve=1)
    ce = CrossEncoder(str(r.dir.parent / "ce-export"), device="cpu")
    assert ce.num_labels == 1
    for i, idx in enumerate(t.cand_index):
        with torch.inference_mode():
            ours = model(**pair_batch(tok, [t.ctx.ids[i]], [[t.cand.ids[j] for j in idx]]))["logits"][0].numpy()
        theirs = ce.predict([(_texts(test, i), c) for c in test.candidates[i]])    # the head's raw output
        if cfg.ranking.loss == "am-softmax":     # encoderlab ranks by scale * tanh of it: the same order
            assert ours.argmax() == theirs.argmax()
            theirs = cfg.ranking.scale * np.tanh(theirs)
        assert ours.argmax() == theirs.argmax()
        assert np.abs(ours - theirs).max() < 1e-4     # no sigmoid added on load
    assert check["top1_agreement"] == 1.0 and check["max_abs_score_diff"] < 1e-4


@pytest.mark.parametrize("over, why", [({"ranking.context_pooling": "mention"}, "context_pooling"),
                                       ({"ranking.mode": "first"}, "no trained model")])
def test_unmappable_runs_are_refused_in_one_line(files, tmp_path, capsys, over, why):
    from encoderlab.cli import main
    from encoderlab.store.runs import RunStore
    from encoderlab.train.ranking import run
    store = RunStore(tmp_path / "runs")
    r = run(cfg_for(files, "bi", **{"train.max_steps": 1, **over}), store, progress=False)
    capsys.readouterr()
    assert main(["--store", str(store.root), "export", r.id]) == 2
    err = capsys.readouterr().err
    assert why in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (r.dir / "sentence-transformers").exists()


def test_classification_run_refuses_st_format(capsys, tiny_teacher):
    from encoderlab.cli import main
    store, teacher = tiny_teacher
    capsys.readouterr()
    assert main(["--store", str(store.root), "export", teacher.id, "--format", "sentence-transformers"]) == 2
    err = capsys.readouterr().err
    assert "needs a completed ranking run" in err and "classification" in err, err


def test_unshared_encoders_export_as_a_query_document_router(files, store):
    """ranking.shared = false: contexts through the context encoder (encode_query), candidates
    through the candidate encoder (encode_document); scores as encoderlab's."""
    from sentence_transformers import SentenceTransformer
    from encoderlab.cost.stexport import export_sentence_transformers
    from encoderlab.train.ranking import run
    cfg = cfg_for(files, "bi", **{"ranking.shared": False, "model.head.pooling": "mean"})
    r = run(cfg, store, progress=False)
    check = export_sentence_transformers(r)
    model, tok = RM.load_biencoder(r.dir / "model", cfg.ranking)
    assert model.cand_encoder is not model.encoder
    test = load_ranking(cfg.data, cfg.ranking).test
    t = tokenize_split(tok, test, cfg.ranking, True, reserve=2)
    with torch.inference_mode():
        ctx = model.embed_contexts(**single_batch(tok, t.ctx.ids)).numpy()
        cand = model.embed_candidates(**single_batch(tok, t.cand.ids)).numpy()
        ctx_by_cand_encoder = model._embed(model.cand_encoder, **single_batch(tok, t.ctx.ids)).numpy()
    assert np.abs(ctx - ctx_by_cand_encoder).max() > 1e-3       # the two encoders really differ
    st = SentenceTransformer(str(r.dir / "sentence-transformers"), device="cpu")
    uniq = list(dict.fromkeys(c for cs in test.candidates for c in cs))
    st_ctx = st.encode_query([_texts(test, i) for i in range(len(test))])
    st_cand = st.encode_document(uniq)
    assert np.abs(st_ctx - ctx).max() < 1e-4
    assert len(uniq) == len(cand) and np.abs(st_cand - cand).max() < 1e-4    # both in first-seen order
    assert check["top1_agreement"] == 1.0 and check["max_abs_score_diff"] < 1e-4


def test_dictionary_index_retrieves_like_encoderlab(files, store, tmp_path):
    """Linking against a dictionary: the exported index (embeddings.npy + entries.json) and the
    exported model's context vectors find the same top-1 entry per domain as encoderlab's retriever."""
    from sentence_transformers import SentenceTransformer
    from encoderlab.cost.stexport import export_sentence_transformers
    from encoderlab.train.ranking import run
    from encoderlab.train.retriever import retrieve, retriever
    rows = [json.loads(x) for f in files.values() for x in open(f)]
    over = {"ranking.dictionary": small_dictionary(tmp_path / "dictionary.csv", rows, 40), "model.head.pooling": "cls",
            "ranking.score": "dot"}
    cfg = cfg_for(files, "bi", **over)
    r = run(cfg, store, progress=False)
    check = export_sentence_transformers(r)
    folder = r.dir / "sentence-transformers"
    vecs = np.load(folder / "index" / "embeddings.npy")
    meta = json.loads((folder / "index" / "entries.json").read_text())
    assert vecs.shape == (check["index"]["entries"], 16) == (len(meta["ids"]), 16)
    st = SentenceTransformer(str(folder), device="cpu")
    assert [type(m).__name__ for m in st] == ["Transformer", "Pooling"]     # dot product: no Normalize
    s = retriever(C.replace(cfg, **{"ranking.retriever": f"run:{r.id}"}), store.root)
    ours_top = retrieve(s, "test", 1)[0][:, 0]
    test = s.data.test
    ctx = st.encode([_texts(test, i) for i in range(len(test))])
    ids, entry_doms = np.asarray(meta["ids"]), np.asarray(meta["domains"])
    for i in range(len(test)):
        members = np.flatnonzero(entry_doms == test.domains[i])
        best = ids[members[np.argmax(vecs[members] @ ctx[i])]]
        assert best == s.data.dictionary.ids[ours_top[i]]
    assert len(set(ids)) > len(test)        # a real index: more entries than contexts


def test_bi_export_cuts_candidates_at_the_run_budget(files, store):
    """Candidates longer than ranking.candidate_tokens: encode_document keeps the same head of the text
    as encoderlab (document_length), so even cut candidates score alike."""
    from encoderlab.cost.stexport import export_sentence_transformers
    from encoderlab.train.ranking import run
    r = run(cfg_for(files, "bi", **{"ranking.candidate_tokens": 10, "train.max_steps": 2}), store, progress=False)
    check = export_sentence_transformers(r)
    assert check["cut_by_budget"]["candidates"] > 20 and check["cut_by_budget"]["contexts"] == 0
    assert check["top1_agreement"] == 1.0 and check["max_abs_score_diff"] < 1e-4


def test_cli_export_of_a_ranking_run(files, tmp_path, capsys):
    """`encoderlab export RUN` picks sentence-transformers for a ranking run and prints the check;
    `--format onnx` and ONNX-only flags are refused in one line."""
    from encoderlab.cli import main
    from encoderlab.store.runs import RunStore
    from encoderlab.train.ranking import run
    store = RunStore(tmp_path / "runs")
    r = run(cfg_for(files, "bi", **{"train.max_steps": 2}), store, progress=False)
    root = str(store.root)
    capsys.readouterr()
    assert main(["--store", root, "export", r.id, "--out", str(tmp_path / "st")]) == 0
    out = capsys.readouterr().out
    assert "SentenceTransformer folder" in out and "same top-1 on 100.00 %" in out
    assert json.loads((tmp_path / "st" / "export-st.json").read_text())["contexts"] == 10
    assert store.get(r.id).info["st_export"]["folder"] == str(tmp_path / "st")
    assert main(["--store", root, "export", r.id, "--out", str(tmp_path / "st")]) == 0     # again: replaced
    capsys.readouterr()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not an export")
    for extra, why in ((["--format", "onnx"], "ranking"), (["--int8"], "--format onnx"),
                       (["--out", str(tmp_path / "mine")], "not an earlier export")):
        assert main(["--store", root, "export", r.id, *extra]) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err, err
