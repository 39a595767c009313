"""The bi-encoder learning from a cross-encoder's scores (ranking.teacher): the two losses against
hand-computed values, the teacher checks, the score cache, runs end to end in list and dictionary
mode from a tiny trained cross-encoder run; length-sorted bi-encoder batches and frozen candidates.
Real wordnet-senses rows, a tiny random model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import real_rows
from encoderlab import config as C
from encoderlab.encode import budget as B
from encoderlab.encode.text import train_batches
from encoderlab.errors import ConfigError
from encoderlab.models import classifier
from test_ranking import cfg_for as ranking_cfg
from encoderlab.train import bidistill as BD
from encoderlab.train import biencoder as BE


def cfg_for(files, **over) -> C.ExperimentConfig:
    return ranking_cfg(files, **{"name": "distill", "train.threads": 1, **over})


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    from encoderlab.store.runs import RunStore
    s = RunStore(tmp_path_factory.mktemp("store") / "runs")
    yield s
    s.close()


@pytest.fixture(scope="module")
def teacher(senses_files, shared_store):
    """A tiny cross-encoder trained one epoch on the explicit lists: the teacher of every test here."""
    from encoderlab.train.ranking import run
    r = run(cfg_for(senses_files, **{"ranking.mode": "cross"}), shared_store, progress=False)
    assert r.status == "completed"
    return r


# --- losses ------------------------------------------------------------------------------------

def _kl_by_hand(t: list[float], s: list[float], T: float) -> float:
    zt = sum(math.exp(x / T) for x in t)
    zs = sum(math.exp(x / T) for x in s)
    return sum(math.exp(a / T) / zt * (math.log(math.exp(a / T) / zt) - math.log(math.exp(b / T) / zs))
               for a, b in zip(t, s))


def test_kl_and_margin_mse_against_hand_computed_values():
    student, teacher = [2.0, 1.0, 0.0], [1.0, 0.0, 0.5]
    s = torch.tensor([student, [3.0, -1.0, 99.0]])           # row 2: two candidates, the third is padding
    t = torch.tensor([teacher, [0.5, 0.0, -99.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    gold = torch.tensor([0, 0])
    for T in (1.0, 2.0):
        want = (_kl_by_hand(teacher, student, T) + _kl_by_hand([0.5, 0.0], [3.0, -1.0], T)) / 2
        assert BD.kl_loss(s, t, mask, T).item() == pytest.approx(want, rel=1e-5)
    same = torch.tensor([teacher])
    assert BD.kl_loss(same, same, mask[:1], 1.0).item() == pytest.approx(0, abs=1e-6)
    # margins gold - neg: student (1, 2) and (4); teacher (1, 0.5) and (0.5)
    # squared differences 0, 2.25, 12.25 over the three (context, negative) pairs
    assert BD.margin_mse_loss(s, t, mask, gold).item() == pytest.approx((0 + 2.25 + 12.25) / 3)
    # the gold need not be first; a shift of all of a context's student scores changes nothing
    perm = torch.tensor([[1, 2, 0]])
    assert BD.margin_mse_loss(s[:1, perm[0]] + 5.0, t[:1, perm[0]], mask[:1], torch.tensor([2])).item() \
        == pytest.approx(2.25 / 2)
    rc = C.RankingConfig(distill_loss="margin-mse")
    assert BD.distill_loss(s, t, mask, gold, rc) == BD.margin_mse_loss(s, t, mask, gold)


def test_distill_losses_have_gradients_on_the_student_only():
    s = torch.tensor([[2.0, 1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0, 0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    (BD.kl_loss(s, t, mask, 1.0) + BD.margin_mse_loss(s, t, mask, torch.tensor([0]))).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# --- the teacher -------------------------------------------------------------------------------

def test_bad_teacher_is_a_config_error(senses_files, shared_store, teacher):
    from encoderlab.train.ranking import run
    first = run(cfg_for(senses_files, **{"ranking.mode": "first"}), shared_store, progress=False)
    before = len(shared_store.list())
    for ref, msg in (("run:no-such-run", "no run"), ("nope", "run:ID"), (f"run:{first.id}", "not a cross-encoder")):
        with pytest.raises(ConfigError, match=msg) as e:
            run(cfg_for(senses_files, **{"ranking.mode": "bi", "ranking.teacher": ref}), shared_store, progress=False)
        assert "ranking.teacher" in str(e.value)
    assert len(shared_store.list()) == before                # refused before a run was created
    with pytest.raises(ConfigError, match="shared = false"):
        run(cfg_for(senses_files, **{"ranking.mode": "bi", "ranking.freeze_candidates": True}), shared_store,
            progress=False)
    with pytest.raises(ConfigError, match="ranking.distill_weight"):
        cfg_for(senses_files, **{"ranking.distill_weight": 1.5})
    with pytest.raises(ConfigError, match="ranking.distill_temperature"):
        C.from_dict(C.ExperimentConfig, {"ranking": {"distill_temperature": 0}})


def test_unfinished_teacher_is_refused(senses_files, tmp_path):
    from encoderlab.store.runs import RunStore
    from encoderlab.train.ranking import run
    store = RunStore(tmp_path / "runs")
    cross = run(cfg_for(senses_files, **{"ranking.mode": "cross", "train.max_steps": 1}), store, progress=False)
    store.get(cross.id).update(status="interrupted")
    with pytest.raises(ConfigError, match="interrupted, not completed"):
        run(cfg_for(senses_files, **{"ranking.mode": "bi", "ranking.teacher": f"run:{cross.id}"}), store,
            progress=False)
    store.close()


def test_distill_run_end_to_end_and_its_cache(senses_files, shared_store, teacher, monkeypatch):
    from encoderlab.train.ranking import run
    from encoderlab.train.retriever import setup
    cfg = cfg_for(senses_files, **{"ranking.mode": "bi", "ranking.teacher": f"run:{teacher.id}",
                            "ranking.distill_weight": 0.7})
    r = run(cfg, shared_store, progress=False)
    assert r.status == "completed"
    info = r.info["data"]["teacher"]
    n_pairs = sum(len(json.loads(x)["candidates"]) for x in open(senses_files["train"]))
    assert info["run"] == teacher.id and info["scored_pairs"] == n_pairs and info["cache_bytes"] > 0
    train = [e for e in r.events() if e["split"] == "train"][-1]["metrics"]
    assert train["distill_loss"] > 0 and train["loss"] == pytest.approx(
        0.3 * train["ce_loss"] + 0.7 * train["distill_loss"], rel=1e-4)
    cached = BD.read_cache(r.dir / BD.CACHE, f"run:{teacher.id}", 24)
    assert cached is not None and np.isfinite(cached.scores).all()
    # the cached scores are the teacher's own scores of each (context, candidate) pair
    _, tcfg, model, tok = BD.load_teacher(f"run:{teacher.id}", shared_store)
    s = setup(cfg, shared_store.root)
    ctx, cand = BD.teacher_segments(s, tcfg, tok)
    cands, scores, gold = cached.of(5)
    batch = B.pair_batch(tok, [ctx.ids[5]], [[cand.ids[c] for c in cands]])
    with torch.inference_mode():
        direct = model(**batch)["logits"][0, :len(cands)].numpy()
    assert np.allclose(direct, scores, atol=1e-4)
    assert gold == json.loads(open(senses_files["train"]).readlines()[5])["label"]
    # scored once: a second call in the same folder reads the cache and never loads the teacher
    monkeypatch.setattr(BD, "load_teacher", lambda *a: pytest.fail("the teacher was loaded again"))
    again = BD.teacher_scores(s, r.dir, shared_store)
    assert np.array_equal(again.scores, cached.scores) and np.array_equal(again.cands, cached.cands)
    # the same configuration started again (a new run folder) copies the earlier run's cache
    from encoderlab.store.runs import RunStore
    store = RunStore(shared_store.root)
    again = store.create(cfg, [], task="ranking")
    assert BD.earlier_cache(store, again.dir) == r.dir / BD.CACHE
    copied = BD.teacher_scores(s, again.dir, store)
    assert (again.dir / BD.CACHE).exists() and np.array_equal(copied.scores, cached.scores)
    store.get(again.id).update(status="failed")
    store.close()
    # another teacher id does not trust this cache
    assert BD.read_cache(r.dir / BD.CACHE, "run:other", 24) is None


def test_margin_mse_in_dictionary_mode_scores_gold_and_retrieved(senses_files, shared_store, teacher):
    from encoderlab.train.ranking import run
    cfg = cfg_for(senses_files, **{"ranking.mode": "bi", "ranking.teacher": f"run:{teacher.id}",
                            "ranking.distill_loss": "margin-mse", "ranking.dictionary": senses_files["dictionary"],
                            "ranking.top_k": 4, "ranking.k_train": 4})
    r = run(cfg, shared_store, progress=False)
    assert r.status == "completed" and r.info["data"]["candidates"] == "dictionary"
    ts = BD.read_cache(r.dir / BD.CACHE, f"run:{teacher.id}", 24)
    sizes = np.diff(ts.offsets)
    assert (sizes <= 4).all() and (sizes >= 2).all() and (ts.gold == 0).all()
    assert all(len(set(ts.of(i)[0])) == sizes[i] for i in range(len(ts)))     # gold never twice
    assert [e for e in r.events() if e["split"] == "train"][-1]["metrics"]["distill_loss"] >= 0


# --- batches and frozen candidates ---------------------------------------------------------------

def test_bucketed_batches_pad_less_than_random_ones_on_real_rows():
    rows = real_rows("wordnet-senses", "train", n=800)
    _, _, tok = classifier.prepare(C.ModelConfig())
    B.add_markers(tok)
    segs = B.encode_contexts(tok, [r["context_left"] for r in rows], [r["mention"] for r in rows],
                             [r["context_right"] for r in rows], 64, "mention", True)
    lengths = np.asarray([len(x) for x in segs.ids])
    random = BE.padding_waste(lengths, train_batches(lengths, 32, 0, False))
    bucketed = BE.padding_waste(lengths, train_batches(lengths, 32, 0, True))
    assert 0 <= bucketed < random / 2
    # every context in exactly one batch, either way
    assert sorted(np.concatenate(train_batches(lengths, 32, 0, True)).tolist()) == list(range(len(rows)))
    assert BE.padding_waste(np.array([1, 3]), [np.array([0, 1])]) == pytest.approx(1 - 8 / 10)


def test_frozen_candidate_encoder_is_encoded_once_and_not_trained(senses_files, store, monkeypatch):
    from encoderlab.models import ranking as RM
    from encoderlab.train import retriever
    from encoderlab.train.ranking import run
    calls = []
    real = BE.embed
    monkeypatch.setattr(BE, "embed", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    cfg = cfg_for(senses_files, **{"ranking.mode": "bi", "ranking.shared": False, "ranking.freeze_candidates": True,
                            "train.epochs": 2, "train.lr": 1e-2})
    r = run(cfg, store, progress=False)
    assert r.status == "completed" and calls == ["cand"]           # once for both epochs
    trained, _ = RM.load_biencoder(r.dir / "model", cfg.ranking)
    fresh = retriever.setup(cfg, store.root).model                   # same seed: the initial weights
    for (name, a), (_, b) in zip(trained.cand_encoder.state_dict().items(), fresh.cand_encoder.state_dict().items()):
        assert torch.equal(a, b), name
    assert not all(torch.equal(a, b) for a, b in zip(trained.encoder.state_dict().values(),
                                                     fresh.encoder.state_dict().values()))
