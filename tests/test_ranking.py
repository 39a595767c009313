"""Candidate ranking: readers (variable K, long csv, dictionary), segment budgets and truncation,
pair packing with masks, AM-softmax, the vector index, metrics, and both recipes end to end on
slices of the real wordnet-senses / wordnet-linking data with a tiny model."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_MODEL, write_jsonl
from encoderlab import config as C
from encoderlab import metrics as M
from encoderlab.data import builtin
from encoderlab.data.ranking import load_ranking, read_dictionary
from encoderlab.encode import budget as B
from encoderlab.errors import DataError
from encoderlab.models import classifier
from encoderlab.models import ranking as RM
from encoderlab.retrieval import VectorIndex


def cfg_for(files, **over) -> C.ExperimentConfig:
    raw = {"name": "rank", "data": {"source": files["train"], "validation": files["validation"],
                                    "test": files["test"]},
           "model": {**TINY_MODEL}, "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 32, "lr": 1e-3,
                                                "precision": "fp32"},
           "ranking": {"context_tokens": 24, "candidate_tokens": 24, "k_train": 3}}
    cfg = C.from_dict(C.ExperimentConfig, raw)
    return C.replace(cfg, **over) if over else cfg


# --- data --------------------------------------------------------------------------------------

def test_jsonl_variable_k_and_builtin(senses_files):
    data = load_ranking(C.DataConfig(source=senses_files["train"], validation=senses_files["validation"],
                                     test=senses_files["test"]), C.RankingConfig())
    assert data.candidates == "list"
    ks = [len(c) for c in data.train.candidates]
    assert min(ks) >= 2 and len(set(ks)) > 1            # variable K
    assert all(0 <= lab < k for lab, k in zip(data.train.labels, ks))
    assert all(m for m in data.train.mention)            # every WordNet context has its word marked
    full = load_ranking(C.DataConfig(source="builtin:wordnet-linking"), C.RankingConfig())
    assert full.candidates == "dictionary" and len(full.dictionary) > 100000
    assert {d for d in full.test.domains}.isdisjoint(full.train.domains)   # held-out domains



def test_senses_full_extends_senses():
    """wordnet-senses-full: every training context; the 4,000 of wordnet-senses are its first ones,
    validation and test are the same files."""
    small, full = builtin.get("wordnet-senses"), builtin.get("wordnet-senses-full")
    assert small.files["validation"] == full.files["validation"] and small.files["test"] == full.files["test"]
    with gzip.open(small.files["train"], "rt", encoding="utf-8") as a, \
            gzip.open(full.files["train"], "rt", encoding="utf-8") as b:
        head, rest = a.read().splitlines(), b.read().splitlines()
    assert len(rest) > 4 * len(head) and rest[:len(head)] == head
    data = load_ranking(C.DataConfig(source="builtin:wordnet-senses-full", max_train=8000), C.RankingConfig())
    assert len(data.train) == 8000 and set(data.train.domains) == {json.loads(x)["domain"] for x in rest}


def test_long_csv_and_errors(tmp_path):
    rows = [{"group": "q1", "context": "Where do fish live?", "candidate": c, "label": int(c == "water"),
             "domain": "nature"} for c in ("water", "trees", "sky")]
    rows += [{"group": "q2", "context": "What do cows eat?", "candidate": c, "label": int(c == "grass"),
              "domain": "farm"} for c in ("grass", "rocks")]
    pd.DataFrame(rows).to_csv(tmp_path / "mc.csv", index=False)
    dc = C.DataConfig(source=str(tmp_path / "mc.csv"), validation=str(tmp_path / "mc.csv"),
                      test=str(tmp_path / "mc.csv"))
    data = load_ranking(dc, C.RankingConfig())
    assert [len(c) for c in data.train.candidates] == [3, 2]
    assert list(data.train.labels) == [0, 0] and data.train.mention == ["", ""]
    rows[4]["label"] = 1                                 # two gold rows in q2
    pd.DataFrame(rows).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="2 gold rows") as e:
        load_ranking(C.DataConfig(source=str(tmp_path / "bad.csv"), validation=dc.validation, test=dc.test),
                     C.RankingConfig())
    assert "bad.csv" in str(e.value) and "label" in str(e.value)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"context": "a b", "candidates": ["x", "y"], "label": 0},
                                               {"context": "c d", "candidates": ["x", "y"], "label": 2}])
    with pytest.raises(DataError, match=r"outside the candidate list.*") as e:
        load_ranking(C.DataConfig(source=bad, validation=bad, test=bad), C.RankingConfig())
    assert "row 2" in str(e.value) and "field 'label'" in str(e.value)


def test_dictionary_reader_errors(tmp_path):
    pd.DataFrame({"id": ["a", "a"], "title": ["t", "u"], "description": ["d", "e"]}).to_csv(tmp_path / "d.csv",
                                                                                           index=False)
    with pytest.raises(DataError, match="duplicate id 'a'") as e:
        read_dictionary(str(tmp_path / "d.csv"))
    assert "row 2" in str(e.value)
    ctx = write_jsonl(tmp_path / "c.jsonl", [{"context": "x y", "gold": "zz"}])
    pd.DataFrame({"id": ["a"], "title": ["t"], "description": ["d"]}).to_csv(tmp_path / "ok.csv", index=False)
    with pytest.raises(DataError, match="'zz' is not in the dictionary"):
        load_ranking(C.DataConfig(source=ctx, validation=ctx, test=ctx),
                     C.RankingConfig(dictionary=str(tmp_path / "ok.csv")))


# --- budgets and truncation --------------------------------------------------------------------

def test_cut_modes():
    ids = list(range(10))
    assert B.cut(ids, 4, "head") == [0, 1, 2, 3]
    assert B.cut(ids, 4, "tail") == [6, 7, 8, 9]
    assert B.cut(ids, 5, "head+tail") == [0, 1, 2, 8, 9]
    assert B.cut(ids, 20, "tail") == ids


def test_centre_keeps_mention_and_shares_budget():
    left, mention, right = list(range(10)), [100, 101, 102], list(range(200, 210))
    out = B.centre(left, mention, right, 9)
    assert out == [7, 8, 9, 100, 101, 102, 200, 201, 202]
    # a short left side gives its share to the right
    assert B.centre([1], mention, right, 9) == [1, 100, 101, 102, 200, 201, 202, 203, 204]
    assert B.centre(left, mention, [], 5) == [8, 9, 100, 101, 102]


@pytest.fixture(scope="module")
def tok():
    _, _, t = classifier.prepare(C.ModelConfig())
    B.add_markers(t)
    return t


def test_contexts_marked_and_truncated_per_budget(tok):
    left = ["a long sentence with many words before the target " * 3]
    segs = B.encode_contexts(tok, left, ["bank"], [" and more words after it " * 3], 12, "mention", True)
    ids = segs.ids[0]
    m_open, m_close = tok.convert_tokens_to_ids(list(B.MARKERS))
    assert len(ids) == 10 and segs.truncated == 1      # 12 minus [CLS] and [SEP]
    i = ids.index(m_open)
    assert tok.convert_ids_to_tokens(ids[i + 1]) == "bank" and ids[i + 2] == m_close
    assert 2 <= i <= 5                                   # centred: context kept on both sides
    head = B.encode_contexts(tok, left, ["bank"], [" after"], 12, "head", True)
    assert m_open not in head.ids[0]                     # head truncation loses the far mention
    cands = B.encode_candidates(tok, ["one two three four five six"], 5, "tail", reserve=1)
    assert tok.convert_ids_to_tokens(cands.ids[0]) == ["three", "four", "five", "six"]


def test_pair_batch_variable_k_mask_and_types(tok):
    ctx = [[1000, 1001], [1002]]
    cands = [[[2000], [2001, 2002], [2003]], [[2004, 2005, 2006]]]
    b = B.pair_batch(tok, ctx, cands)
    assert b["input_ids"].shape == (4, 7)                # sum K = 4 pairs, longest 1+3+1+3... = 7
    assert b["cand_mask"].tolist() == [[True, True, True], [True, False, False]]
    row = b["input_ids"][3].tolist()
    assert row == [tok.cls_token_id, 1002, tok.sep_token_id, 2004, 2005, 2006, tok.sep_token_id]
    assert b["token_type_ids"][3].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert b["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 1, 0]
    stats = B.budget_stats(B.Segments([[1, 2], [3]], np.array([2, 1]), 0),
                           B.Segments([[4], [5, 6, 7]], np.array([1, 3]), 1), [[(0, 0), (1, 1)]], 8, 8)
    assert stats["padding_waste"] == pytest.approx(1 - (6 + 7) / 14)
    assert stats["candidate_truncated"] == 0.5


# --- models and losses -------------------------------------------------------------------------

def test_am_softmax_is_ce_with_margin():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, -1.0]])
    labels = torch.tensor([0, 1])
    ce = RM.rank_loss(logits, labels, None, "ce", 0.3, 10.0)
    am0 = RM.rank_loss(logits, labels, None, "am-softmax", 0.0, 10.0)
    am = RM.rank_loss(logits, labels, None, "am-softmax", 0.3, 10.0)
    assert am0 == pytest.approx(ce)
    shifted = logits.clone()
    shifted[0, 0] -= 3.0
    shifted[1, 1] -= 3.0
    assert am == pytest.approx(torch.nn.functional.cross_entropy(shifted, labels))
    assert am > ce
    mask = torch.tensor([[True, True, False], [True, True, True]])
    masked = RM.rank_loss(logits, labels, mask, "ce", 0.0, 1.0)
    assert masked < ce                                   # a masked competitor no longer counts


def test_cross_encoder_masks_missing_candidates(tok):
    rc = C.RankingConfig(loss="am-softmax")
    model, t, _ = RM.build(C.ModelConfig(**{k: v for k, v in TINY_MODEL.items()}), rc)
    b = B.pair_batch(t, [[1000, 1001], [1002]], [[[2000], [2001, 2002], [2003]], [[2004], [2005]]])
    out = model(**b, labels=torch.tensor([1, 0]))
    assert out["logits"].shape == (2, 3)
    assert out["logits"][1, 2] == RM.NEG                 # example 2 has K = 2
    assert out["logits"][0].abs().max() <= rc.scale      # AM-softmax scores are bounded
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


# --- index and metrics -------------------------------------------------------------------------

def test_vector_index_matches_brute_force():
    rng = np.random.default_rng(0)
    vecs, queries = rng.normal(size=(500, 16)), rng.normal(size=(7, 16))
    scores, rows = VectorIndex(vecs, backend="numpy").search(queries, 10)
    brute = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
    assert (rows == brute).all()
    assert np.all(np.diff(scores, axis=1) <= 0)
    _, all_rows = VectorIndex(vecs[:5], backend="numpy").search(queries, 64)
    assert all_rows.shape == (7, 5)


def test_gold_ranks_and_domain_means():
    logits = np.array([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [0.2, 0.1, 9.0]])
    mask = np.array([[True, True, True], [True, True, True], [True, True, False]])
    ranks = M.gold_ranks(logits, np.array([1, 0, 0]), mask)
    assert ranks.tolist() == [1, 2, 1]                   # a tie counts against the gold; mask drops 9.0
    assert M.gold_ranks(logits, np.array([-1, 0, 0])).tolist()[0] == 0
    s = M.ranking(np.array([1, 2, 0, 1]), ["a", "a", "b", "b"], ks=(1, 2))
    assert s["accuracy"] == 0.5 and s["per_domain"]["a"]["mrr"] == pytest.approx(0.75)
    assert s["per_domain"]["b"]["recall@2"] == 0.5
    assert s["domain_mean"]["mrr"] == pytest.approx((0.75 + 0.5) / 2)


# --- recipes end to end ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["cross", "bi", "zero-shot", "first", "random"])
def test_modes_end_to_end(senses_files, store, mode):
    from encoderlab.train.ranking import run
    r = run(cfg_for(senses_files, **{"ranking.mode": mode, "ranking.hard_negatives": 1}), store, progress=False)
    assert r.status == "completed"
    test = [e for e in r.events() if e["split"] == "test"][-1]["metrics"]
    doms = {d for d in json.loads(open(senses_files["test"]).readline()) and
            [json.loads(x)["domain"] for x in open(senses_files["test"])]}
    assert all(f"accuracy/{d}" in test for d in doms) and "domain_mean/accuracy" in test
    assert 0 <= test["accuracy"] <= test["recall@8"] <= 1
    if mode == "first":
        rows = [json.loads(x) for x in open(senses_files["test"])]
        assert test["accuracy"] == pytest.approx(np.mean([r["label"] == 0 for r in rows]))
    if mode == "cross":
        stats = r.info["data"]["budget_train"]
        assert 0 <= stats["padding_waste"] < 1 and "context_truncated" in stats


def test_linking_bi_then_cross_reranks_its_top_k(senses_files, store):
    from encoderlab.analysis import ranking as AR
    from encoderlab.train.ranking import run
    over = {"ranking.dictionary": senses_files["dictionary"], "ranking.top_k": 4}
    bi = run(cfg_for(senses_files, **{"ranking.mode": "bi", **over}), store, progress=False)
    m = [e for e in bi.events() if e["split"] == "test"][-1]["metrics"]
    assert "recall@64" in m and m["recall@1"] <= m["recall@4"] <= m["recall@64"]
    cross = run(cfg_for(senses_files, **{"ranking.mode": "cross", "ranking.retriever": f"run:{bi.id}", **over}),
                store, progress=False)
    t = [e for e in cross.events() if e["split"] == "test"][-1]["metrics"]
    # the reranker sees the bi-encoder's top 4: its recall bounds the end-to-end accuracy
    assert t["retrieval_recall"] == pytest.approx(m["recall@4"])
    assert t["accuracy"] == pytest.approx(t["retrieval_recall"] * t["normalized_accuracy"])
    rows = AR.e2e_table([cross]).rows
    assert rows[-1]["domain"] == "all" and rows[-1]["accuracy"] == pytest.approx(t["accuracy"])
    fig = AR.e2e_figure([bi], [cross], store.root / "e2e.png")      # per-domain recall@k keys beside
    assert fig.stat().st_size > 1000
    table = AR.domain_table([bi, cross], "accuracy")
    assert len(table.rows) == 2 and "domain mean" in [c[0] for c in table.columns]
    assert {r["experiment"] for r in table.rows} == {bi.info["name"].split(":")[0]}
    assert any("run more seeds" in w for w in table.warnings)      # trained runs with one seed each



def test_classification_verbs_refuse_a_ranking_run(senses_files, tmp_path, capsys):
    """predict / eval / bench / truncate / quantize / export / distill on a ranking run: a clear
    error (exit 2), no stack trace, and no half-made derived run left in the store."""
    from encoderlab.cli import main
    from encoderlab.store.runs import RunStore
    from encoderlab.train.ranking import run
    store = RunStore(tmp_path / "runs")
    bi = run(cfg_for(senses_files, **{"ranking.mode": "bi", "ranking.hard_negatives": 1}), store, progress=False)
    before = len(store.list())
    new = tmp_path / "new.csv"
    new.write_text("text\nthe dealer warrants all the cars\n")
    for verb in (["predict", bi.id, str(new)], ["eval", bi.id], ["bench", bi.id], ["quantize", bi.id],
                 ["export", bi.id, "--format", "onnx"], ["truncate", bi.id, "--layers", "first:1"], ["distill", bi.id]):
        capsys.readouterr()
        assert main(["--store", str(store.root), *verb]) == 2, verb
        err = capsys.readouterr().err
        assert "ranking" in err and "Traceback" not in err, (verb, err)
    assert len(store.list()) == before


def test_cli_rank_budgets_and_table(senses_files, tmp_path, capsys):
    from encoderlab.cli import main
    exp = tmp_path / "exp.toml"
    exp.write_text(C.to_toml(cfg_for(senses_files, **{"ranking.mode": "first"})))
    assert main(["--store", str(tmp_path / "runs"), "rank", str(exp), "--quiet"]) == 0
    assert main(["--store", str(tmp_path / "runs"), "rank-table", "--format", "csv"]) == 0
    assert main(["--store", str(tmp_path / "runs"), "rank-table", "--format", "markdown"]) == 0
    assert "run more seeds" not in capsys.readouterr().out          # an untrained baseline needs none
    assert main(["--store", str(tmp_path / "runs"), "show", "last"]) == 0
    out = capsys.readouterr().out
    assert "ranking, mode first" in out and "test accuracy" in out and "no problems found" in out
    assert main(["--store", str(tmp_path / "runs"), "report", "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Ranking: held-out domains" in page and "domain mean" in page
    assert main(["rank-budgets", str(exp), "--budgets", "16/8,8/16", "--format", "json"]) == 0
    out = capsys.readouterr().out
    budgets = json.loads(out[out.index("[\n"):])
    assert [b["budget"] for b in budgets] == ["16/8", "8/16"]
    assert budgets[0]["candidate_truncated"] > budgets[1]["candidate_truncated"]
    assert main(["rank-budgets", str(exp), "--budgets", "16x8"]) == 2


def test_mention_pooling_masks_the_marked_span_and_needs_markers(senses_files, store):
    import torch

    from encoderlab.errors import ConfigError
    from encoderlab.models.ranking import mention_mask
    from encoderlab.train.ranking import run
    ids = torch.tensor([[101, 7, 90, 8, 9, 91, 5, 102],     # [M] at 2, [/M] at 5
                        [101, 7, 8, 9, 102, 0, 0, 0]])       # no mention left: the attention mask
    att = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    got = mention_mask(ids, att, (90, 91))
    assert got.tolist() == [[0, 0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
    with pytest.raises(ConfigError, match="markers"):
        run(cfg_for(senses_files, **{"ranking.mode": "bi", "ranking.context_pooling": "mention",
                                     "ranking.markers": False}), store, progress=False)
    for mode in ("bi", "cross"):
        r = run(cfg_for(senses_files, **{"ranking.mode": mode, "ranking.context_pooling": "mention"}), store,
                progress=False)
        test = [e for e in r.events() if e["split"] == "test"][-1]["metrics"]
        assert r.status == "completed" and 0 <= test["accuracy"] <= 1


# --- sweeps: the common sweep plan and backends run ranking points too ---------------------------

def _rank_sweep_file(files, tmp_path, sweep: str) -> str:
    exp = tmp_path / "sweep.toml"
    exp.write_text(C.to_toml(cfg_for(files, name="rsw", **{"train.threads": 1})) + f"\n[sweep]\n{sweep}\n")
    return str(exp)


def test_ranking_sweep_runs_through_sweep_run_point(senses_files, tmp_path, capsys):
    from encoderlab import sweep as S
    from encoderlab.cli import main
    from encoderlab.store.runs import RunStore
    exp = _rank_sweep_file(senses_files, tmp_path, '"ranking.mode" = ["first", "bi"]')
    points = S.expand(exp)
    root = tmp_path / "runs"
    out = S.run_point(points[1].cfg, root, "start", kind="ranking")     # the bi-encoder point alone
    store = RunStore(root)
    assert out.status == "completed" and store.get(out.run_id).info["task"] == "ranking"
    assert [a for _, a, _ in S.plan(store, points, "ranking")] == ["start", "skip"]
    assert main(["--store", str(root), "rank", exp, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "[1/2] mode=first: run" in printed and "[2/2] mode=bi: skip (done)" in printed
    rows = store.list(group="rsw")
    assert len(rows) == 2 and {r["kind"] for r in rows} == {"ranking"} and {r["status"] for r in rows} == {"completed"}
    # an interrupted ranking point starts again (ranking runs restart rather than resume)
    store.get(out.run_id).update(status="interrupted")
    assert [a for _, a, _ in S.plan(store, points, "ranking")] == ["skip", "start"]
    assert [a for _, a, _ in S.plan(store, points, "classification")] == ["skip", "resume"]
    store.close()

