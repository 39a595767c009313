"""The second stage that cannot lose to the first: score fusion (rerank_alpha), hardest negatives
mined by the retriever, WiSE-FT weight ensembling, and a cross-encoder started from a bi-encoder run;
on slices of the real wordnet-senses data with a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import real_rows, write_jsonl
from encoderlab.errors import ConfigError
from encoderlab.train import fusion
from test_ranking import cfg_for


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rerank")
    return {s: write_jsonl(folder / f"{s}.jsonl", real_rows("wordnet-senses", s, n=n))
            for s, n in (("train", 24), ("validation", 16), ("test", 12))}


def test_zscore_fuse_and_ranks_by_hand():
    r, f = [np.array([1.0, 2.0, 3.0])], [np.array([30.0, 20.0, 10.0])]
    assert np.allclose(fusion.zscore(r[0]), [-1.224745, 0.0, 1.224745], atol=1e-6)
    assert np.allclose(fusion.zscore(np.array([5.0, 5.0])), [0.0, 0.0])          # constant list: no NaN
    assert fusion.fuse(r, f, 1.0) is r                                             # reranker alone
    assert np.allclose(fusion.fuse(r, f, 0.0)[0], fusion.zscore(f[0]))            # retriever alone
    assert np.allclose(fusion.fuse(r, f, 0.5)[0], 0.0)                            # exact opposites cancel
    # ties count against the gold; label -1 (not retrieved) and empty lists are misses
    assert list(fusion.gold_ranks([np.array([1.0, 1.0, 0.0]), np.array([0.2, 0.9]), np.zeros(0)],
                                  np.array([0, -1, 0]))) == [2, 0, 0]


def test_tuned_alpha_never_below_the_retriever_on_validation():
    rng = np.random.default_rng(0)
    n, k = 200, 6
    labels = rng.integers(0, k, n)
    first = [rng.normal(size=k) + 1.5 * (np.arange(k) == g) for g in labels]     # a decent retriever
    noise = [rng.normal(size=k) for _ in labels]                                   # a reranker that learned nothing
    doms = ["a"] * n
    alpha, curve = fusion.tune_alpha(noise, first, labels, doms)
    acc = {c["alpha"]: c["accuracy"] for c in curve}
    assert len(curve) == 21 and acc[alpha] >= acc[0.0] > acc[1.0]
    # a reranker that is always right wins outright, and ties go to the larger alpha
    perfect = [10.0 * (np.arange(k) == g) for g in labels]
    alpha, curve = fusion.tune_alpha(perfect, first, labels, doms)
    assert alpha == 1.0 and max(c["accuracy"] for c in curve) == 1.0


def test_interpolate_is_a_weight_space_line():
    m = torch.nn.Linear(3, 2)
    start = fusion.snapshot(m)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    tuned = fusion.snapshot(m)
    fusion.interpolate(m, start, tuned, 0.25)
    assert torch.allclose(m.weight, start["weight"] + 0.25)
    fusion.interpolate(m, start, tuned, 0.0)
    assert torch.allclose(m.bias, start["bias"])
    fusion.interpolate(m, start, tuned, 1.0)
    assert torch.allclose(m.weight, tuned["weight"])


def test_hardest_negatives_are_the_retrievers_top_wrong_candidates():
    from encoderlab.train.crossencoder import sample_candidates
    rng = np.random.default_rng(0)
    cands, first = [10, 11, 12, 13, 14], np.array([0.1, 0.9, 0.5, 0.8, 0.7])
    chosen, gold = sample_candidates(cands, 1, -1, 3, rng, first)
    assert chosen[gold] == 11 and sorted(chosen) == [11, 13, 14]        # gold + the two best wrong ones
    chosen, gold = sample_candidates(cands, -1, 99, 3, rng, first)      # gold missed by the retriever
    assert chosen[gold] == 99 and sorted(c for c in chosen if c != 99) == [11, 13]


def test_cross_run_fuses_mines_and_ensembles(files, store):
    from encoderlab.train.ranking import run
    cfg = cfg_for(files, **{"ranking.mode": "cross", "ranking.negatives": "hardest", "ranking.rerank_alpha": -1.0,
                            "ranking.wise": -1.0, "train.epochs": 2})
    r = run(cfg, store, progress=False)
    assert r.status == "completed"
    val = [e for e in r.events() if e["split"] == "final_validation"][-1]["metrics"]
    test = [e for e in r.events() if e["split"] == "test"][-1]["metrics"]
    # the fused system on validation is at least the retriever alone (alpha = 0 is on the grid)
    assert val["accuracy"] >= val["retriever_accuracy"] - 1e-9
    assert r.info["rerank"]["alpha"] == test["rerank_alpha"] == val["rerank_alpha"]
    assert r.info["wise"]["weight"] == test["wise"]
    assert len(r.info["rerank"]["curve"]) == 21
    assert [c["wise"] for c in r.info["wise"]["curve"]] == [round(w, 1) for w in np.linspace(0, 1, 11)]
    assert max(c["accuracy"] for c in r.info["wise"]["curve"]) == pytest.approx(val["accuracy"])
    for d in {json.loads(x)["domain"] for x in open(files["test"])}:        # both stages per domain
        assert f"retriever_accuracy/{d}" in test and f"reranker_accuracy/{d}" in test
    stage = np.load(r.dir / "first_stage.npz")
    n_train = sum(1 for _ in open(files["train"]))
    assert len(stage["train_offsets"]) == n_train + 1 and len(stage["train_scores"]) == stage["train_offsets"][-1]
    meta = json.loads((r.dir / "model" / "encoderlab.json").read_text())
    assert meta["rerank_alpha"] == r.info["rerank"]["alpha"] and meta["wise"] == r.info["wise"]["weight"]


def test_reranker_alone_keeps_the_old_recipe(files, store):
    """rerank_alpha = 1 with sampled negatives needs no first stage: no retriever scores, no fusion."""
    from encoderlab.train.ranking import run
    r = run(cfg_for(files, **{"ranking.mode": "cross", "ranking.rerank_alpha": 1.0}), store, progress=False)
    test = [e for e in r.events() if e["split"] == "test"][-1]["metrics"]
    assert test["rerank_alpha"] == 1.0 and "retriever_accuracy" not in test
    assert "rerank" not in r.info and not (r.dir / "first_stage.npz").exists()


def test_cross_starts_from_a_bi_encoder_run(files, store):
    """model.path = run:ID of a bi-encoder: the cross-encoder's encoder starts from its weights."""
    from encoderlab.models import ranking as RM
    from encoderlab.train.ranking import run
    bi = run(cfg_for(files, **{"ranking.mode": "bi"}), store, progress=False)
    cfg = cfg_for(files, **{"ranking.mode": "cross", "model.path": f"run:{bi.id}", "model.init": "pretrained",
                            "model.num_layers": 0, "model.hidden_size": 0, "model.num_heads": 0,
                            "model.intermediate_size": 0})
    cross, _, _ = RM.build(cfg.model, cfg.ranking, store.root)
    trained, _ = RM.load_biencoder(bi.dir / "model", bi.config().ranking)
    a, b = cross.encoder.state_dict(), trained.encoder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run(cfg, store, progress=False).status == "completed"


def test_fusion_and_wise_ranges_are_checked(files):
    for key in ("ranking.rerank_alpha", "ranking.wise"):
        with pytest.raises(ConfigError, match=key):
            cfg_for(files, **{key: 1.5})


def test_bi_run_reports_its_starting_weights_and_ensembles(files, store):
    from encoderlab.train.ranking import run
    r = run(cfg_for(files, **{"ranking.mode": "bi", "ranking.wise": -1.0}), store, progress=False)
    test = [e for e in r.events() if e["split"] == "test"][-1]["metrics"]
    val = [e for e in r.events() if e["split"] == "final_validation"][-1]["metrics"]
    curve = r.info["wise"]["curve"]
    assert [c["wise"] for c in curve] == [round(w, 1) for w in np.linspace(0, 1, 11)]
    assert val["accuracy"] == pytest.approx(max(c["accuracy"] for c in curve))
    assert val["start_accuracy"] == pytest.approx(curve[0]["accuracy"])       # w = 0 is the starting encoder
    assert test["wise"] == r.info["wise"]["weight"]
    for d in {json.loads(x)["domain"] for x in open(files["test"])}:
        assert f"start_accuracy/{d}" in test and f"accuracy/{d}" in test
    plain = run(cfg_for(files, **{"ranking.mode": "bi"}), store, progress=False)
    assert "wise" not in plain.info
    assert "start_accuracy" in [e for e in plain.events() if e["split"] == "test"][-1]["metrics"]


def test_first_stage_is_computed_once_per_retriever_and_data(files, store, monkeypatch):
    """A second seed of the same configuration reuses the cached first stage (no retriever built);
    another retrieval depth or data slice is a new cache entry; `store check` ignores the cache."""
    from encoderlab.store.check import check
    from encoderlab.train import crossencoder as CE
    from encoderlab.train.ranking import run
    over = {"ranking.mode": "cross", "ranking.negatives": "hardest"}
    first = run(cfg_for(files, **over), store, progress=False)
    cached = list((store.root / ".cache" / "first-stage").glob("*.npz"))
    assert len(cached) == 1

    def no_retriever(*a, **k):
        raise AssertionError("the retriever was built again")
    monkeypatch.setattr("encoderlab.train.retriever.retriever", no_retriever)
    second = run(cfg_for(files, **over, **{"train.lr": 5e-4}), store, progress=False)   # another learning rate
    a = np.load(first.dir / "first_stage.npz")
    b = np.load(second.dir / "first_stage.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    monkeypatch.undo()
    key = CE._stage_key(cfg_for(files, **over), store.root)
    assert CE._stage_key(cfg_for(files, **over, **{"data.max_eval": 8}), store.root) != key
    # a randomly initialised zero-shot retriever differs per seed, a pretrained one does not
    assert CE._stage_key(cfg_for(files, **over, **{"train.seed": 1}), store.root) != key
    assert not [f for f in check(store).findings if ".cache" in f.path]


def test_stage_table_puts_each_run_beside_its_own_baseline(files, store):
    from encoderlab.analysis import ranking as AR
    from encoderlab.train.ranking import run
    runs = [run(cfg_for(files, **{"ranking.mode": "cross", "ranking.negatives": "hardest", "train.seed": s}),
                store, progress=False) for s in (0, 1)]
    runs.append(run(cfg_for(files, **{"ranking.mode": "bi"}), store, progress=False))
    t = AR.stage_table(runs)
    cross = [r for r in t.rows if r["baseline"] == "first stage alone"]
    doms = sorted({json.loads(x)["domain"] for x in open(files["test"])})
    assert [r["domain"] for r in cross] == doms + ["domain mean", "all"] and all(r["n"] == 2 for r in cross)
    tests = [[e for e in r.events() if e["split"] == "test"][-1]["metrics"] for r in runs[:2]]
    every = cross[-1]
    assert every["delta_mean"] == pytest.approx(np.mean([m["accuracy"] - m["retriever_accuracy"] for m in tests]))
    assert every["reranker_mean"] == pytest.approx(np.mean([m["reranker_accuracy"] for m in tests]))
    assert "rerank_alpha" in every["weights"]
    bi = [r for r in t.rows if r["baseline"] == "starting weights"]
    assert bi and bi[-1]["n"] == 1 and bi[-1]["reranker"] is None     # random init: no zero-shot model
    assert "zero_shot_accuracy" not in [e for e in runs[2].events() if e["split"] == "test"][-1]["metrics"]


def test_pretrained_bi_run_scores_the_zero_shot_model_beside(files, store):
    """A bi-encoder with markers and mention pooling starts elsewhere than the zero-shot baseline
    (no markers, mean pooling): the run scores that baseline on the same contexts too."""
    from encoderlab.analysis import ranking as AR
    from encoderlab.train.ranking import run
    over = {"model.path": "builtin:minilm-l6", "model.init": "pretrained", "model.num_layers": 1,
            "model.hidden_size": 0, "model.num_heads": 0, "model.intermediate_size": 0}
    bi = run(cfg_for(files, **over, **{"ranking.mode": "bi", "ranking.context_pooling": "mention"}), store,
             progress=False)
    zs = run(cfg_for(files, **over, **{"ranking.mode": "zero-shot"}), store, progress=False)
    m = [e for e in bi.events() if e["split"] == "test"][-1]["metrics"]
    z = [e for e in zs.events() if e["split"] == "test"][-1]["metrics"]
    assert m["zero_shot_accuracy"] == pytest.approx(z["accuracy"])
    assert all(m[f"zero_shot_accuracy/{d}"] == pytest.approx(z[f"accuracy/{d}"])
               for d in {json.loads(x)["domain"] for x in open(files["test"])})
    rows = AR.stage_table([bi]).rows
    assert rows[-1]["baseline"] == "zero-shot model" and rows[-1]["base_mean"] == pytest.approx(z["accuracy"])


def test_refreshed_negatives_are_mined_by_the_reranker(files, store, monkeypatch):
    """refresh_negatives: from epoch 2 the training view is scored by the model being trained, and
    those scores pick the negatives."""
    from encoderlab.train import crossencoder as CE
    from encoderlab.train.ranking import run
    seen = []
    real = CE.sample_candidates

    def spy(cands, gold, gold_seg, k, rng, first=None):
        seen.append(None if first is None else np.asarray(first).copy())
        return real(cands, gold, gold_seg, k, rng, first)
    monkeypatch.setattr(CE, "sample_candidates", spy)
    cfg = cfg_for(files, **{"ranking.mode": "cross", "ranking.negatives": "hardest",
                            "ranking.refresh_negatives": True, "train.epochs": 2, "ranking.rerank_alpha": 1.0})
    assert run(cfg, store, progress=False).status == "completed"
    n = sum(1 for _ in open(files["train"]))
    assert len(seen) == 2 * n
    stage = np.load(next(store.root.glob("*/first_stage.npz")))
    offsets = stage["train_offsets"]
    first_epoch = np.concatenate([s for s in seen[:n]])
    assert len(first_epoch) == offsets[-1]                       # epoch 1: the retriever's scores (permuted order)
    assert sorted(first_epoch.round(5)) == sorted(stage["train_scores"].round(5))
    # epoch 2: the reranker's own scores
    assert sorted(np.concatenate(seen[n:]).round(5)) != sorted(stage["train_scores"].round(5))
