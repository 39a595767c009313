"""Diagnostics name the failure of real runs: each pathology is produced by the real fit loop on
real WordNet glosses (tiny model, fp32), checked in the stored metrics first, then diagnosed.

Hand-made event lists appear only at the end, as unit tests of thresholds and group rules."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from encoderlab.errors import EncoderlabError

from conftest import tiny_config
from encoderlab.analysis import diagnose as D
from encoderlab.analysis.tables import epoch_table, final_scores
from encoderlab.store.runs import RunStore
from encoderlab.train.fit import fit

# settings that reliably produce each pathology with the tiny model (tests/conftest.py)
HEALTHY = {}                                                    # lr 3e-3, 3 epochs, 400 examples
COLLAPSE = {"train.lr": 0.5}                                    # every prediction -> majority class
NO_LEARNING = {"train.lr": 1e-9}                                # weights never move
DIVERGE = {"train.lr": 1.0}                                     # epoch-1 loss far above ln(2)
NAN = {"train.lr": 1e20, "train.max_grad_norm": 0.0, "train.epochs": 1, "data.max_train": 32}
OVERFIT = {"data.max_train": 40, "train.epochs": 8, "train.batch_size": 8, "train.lr": 1e-2}
OVERCONFIDENT = {**OVERFIT, "train.lr": 3e-3, "model.hidden_size": 64, "model.intermediate_size": 128}
UNDERFIT = {"train.lr": 1e-3, "train.epochs": 2}
PADDING = {"train.bucket": False, "encode.max_length": 128, "train.max_steps": 1}
TRUNCATION = {"encode.max_length": 10, "train.max_steps": 1}


@pytest.fixture(scope="module")
def mstore(tmp_path_factory):
    s = RunStore(tmp_path_factory.mktemp("diagnose") / "runs")
    yield s
    s.close()


@pytest.fixture(scope="module")
def train(two_class_csv, mstore):
    """fit() once per distinct setting for the whole module."""
    cache = {}

    def go(settings: dict, **more):
        ov = {**settings, **more}
        key = json.dumps(ov, sort_keys=True)
        if key not in cache:
            cache[key] = fit(tiny_config(two_class_csv, **ov), mstore, progress=False)
        return cache[key]
    return go


def codes(findings, severity=None):
    return {f.code for f in findings if severity is None or f.severity == severity}


def one(findings, code):
    hits = [f for f in findings if f.code == code]
    assert len(hits) == 1, (code, findings)
    return hits[0]


def rows(run):
    return epoch_table(run)


# -- real runs ---------------------------------------------------------------------------------


def test_healthy_run_has_no_error_or_warning(train):
    run = train(HEALTHY)
    test = final_scores(run)["test"]
    base = run.info["data"]["majority_baseline_test"]
    r = rows(run)
    assert test["accuracy"] > base + 0.15 and max(test["predicted_share"].values()) < 0.9
    assert r[-1]["train_loss"] < r[0]["train_loss"] / 5 and r[-1]["val_loss"] < r[0]["val_loss"]
    findings = D.diagnose(run)
    assert not [f for f in findings if f.severity in ("error", "warning")], findings
    assert all(isinstance(f, D.Finding) for f in findings)


def test_collapse_lr_too_high(train):
    run = train(COLLAPSE)
    test = final_scores(run)["test"]
    data = run.info["data"]
    # the run really collapsed: one class takes every prediction, accuracy = majority baseline,
    # and the train loss is stuck near the entropy of the label prior
    top = max(test["predicted_share"], key=test["predicted_share"].get)
    assert test["predicted_share"][top] >= 0.95
    assert test["accuracy"] == pytest.approx(data["majority_baseline_test"])
    h = D.prior_entropy(data["train_class_balance"])
    assert abs(rows(run)[-1]["train_loss"] - h) < 0.1 * h
    findings = D.diagnose(run)
    f = one(findings, "collapse")
    assert f.severity == "error"
    assert f"'{top}'" in f.evidence and "100.0%" in f.evidence and f"{h:.3f}" in f.evidence
    assert "train.lr=0.05" in f.fix and "warmup" in f.fix
    assert {"no_learning", "underfitting"}.isdisjoint(codes(findings))


def test_no_learning_tiny_lr(train):
    run = train(NO_LEARNING)
    r = rows(run)
    losses = [x["train_loss"] for x in r]
    assert (max(losses) - min(losses)) / losses[0] < 0.05
    base = run.info["data"]["majority_baseline_validation"]
    assert max(x["val_acc"] for x in r) <= base + 0.02
    findings = D.diagnose(run)
    f = one(findings, "no_learning")
    assert f.severity == "error" and "1e-09" in f.fix and "raise train.lr" in f.fix
    assert f"{losses[0]:.3f}" in f.evidence
    # the never-trained model predicts one class too, but that is explained, not a second error
    assert "collapse" not in codes(findings)


def test_divergence_shows_epoch_and_lower_lr(train):
    run = train(DIVERGE)
    r = rows(run)
    assert r[0]["train_loss"] > 2 * math.log(2)          # epoch 1 far worse than guessing
    f = one(D.diagnose(run), "divergence")
    assert f.severity == "error" and "epoch 1" in f.title
    assert f"{r[0]['train_loss']:.3f}" in f.evidence and "train.lr=0.1" in f.fix


def test_nan_loss_is_divergence(two_class_csv, mstore):
    # fit stops at the first non-finite loss, marks the run failed and logs the step
    with pytest.raises(EncoderlabError, match="became nan"):
        fit(tiny_config(two_class_csv, **NAN), mstore, progress=False)
    run = mstore.get("last")
    assert run.status == "failed" and "lower train.lr" in run.info["message"]
    assert any(ev.get("detail", {}).get("nonfinite") for ev in run.events() if ev["split"] == "train")
    f = one(D.diagnose(run), "divergence")
    assert "NaN" in f.title and "train loss is NaN at epoch 0.5 (step 2)" in f.evidence
    assert "max_grad_norm=1.0" in f.fix and "lower train.lr to 0.01" in f.fix


def test_overfitting_reports_best_epoch(train):
    run = train(OVERFIT)
    r = [x for x in rows(run) if x.get("val_loss") is not None]
    m = min(range(len(r)), key=lambda i: r[i]["val_loss"])
    after = r[m + 1:]
    assert len(after) >= 2 and all(x["val_loss"] > r[m]["val_loss"] for x in after)
    assert r[-1]["val_loss"] > 1.1 * r[m]["val_loss"] and r[-1]["train_loss"] < r[m]["train_loss"]
    findings = D.diagnose(run)
    f = one(findings, "overfitting")
    best_epoch = f"{r[m]['epoch']:g}"
    assert f.severity == "warning" and f"after epoch {best_epoch}" in f.title
    assert f"{r[m]['val_loss']:.3f}" in f.evidence and f"train.epochs={best_epoch}" in f.fix
    assert "divergence" not in codes(findings)


def test_overconfidence_accuracy_up_loss_up(train):
    run = train(OVERCONFIDENT)
    r = [x for x in rows(run) if x.get("val_loss") is not None]
    m = min(range(len(r)), key=lambda i: r[i]["val_loss"])
    assert r[-1]["val_acc"] >= r[m]["val_acc"] + 0.02 and r[-1]["val_loss"] >= 1.2 * r[m]["val_loss"]
    findings = D.diagnose(run)
    assert {"overconfidence", "overfitting"} <= codes(findings, "warning")
    assert "label_smoothing" in one(findings, "overconfidence").fix


def test_underfitting_more_epochs(train):
    run = train(UNDERFIT)
    r = rows(run)
    assert r[-1]["train_acc"] < 0.95 and r[-1]["train_acc"] > r[-2]["train_acc"] + 0.01
    assert r[-1]["train_acc"] <= r[-1]["val_acc"] + 0.05 and r[-1]["train_loss"] < 0.95 * r[-2]["train_loss"]
    findings = D.diagnose(run)
    f = one(findings, "underfitting")
    assert f.severity == "warning" and "train.epochs=4" in f.fix
    assert f"{r[-1]['train_acc']:.3f}" in f.evidence
    assert not codes(findings, "error")


def test_padding_waste_and_truncation(train):
    pad = train(PADDING)
    assert pad.info["data"]["train_padding_waste"] > 0.3
    f = one(D.diagnose(pad), "padding_waste")
    assert f.severity == "warning" and "train.bucket=true" in f.fix
    assert f"{100 * pad.info['data']['train_padding_waste']:.1f}%" in f.evidence
    assert "truncation" not in codes(D.diagnose(pad))

    cut = train(TRUNCATION)
    share = cut.info["data"]["cut_share"]["train"]      # longer than max_length (not only reaching it)
    assert share > 0.5 and cut.info["data"]["truncated_share"]["train"] >= share
    f = one(D.diagnose(cut), "truncation")
    assert f"{100 * share:.1f}%" in f.evidence and "encode.max_length" in f.fix and "encode.long" in f.fix
    dropped = cut.info["data"]["dropped_share"]["train"]
    assert 0 < dropped < 1 and f"{100 * dropped:.1f}% of the train text tokens" in f.evidence
    assert "padding_waste" not in codes(D.diagnose(cut))
    # one optimizer step cannot separate the classes: a collapse there must not blame the lr
    for f in D.diagnose(cut):
        if f.code == "collapse":
            assert "only 1 optimizer step" in f.fix and "lower train.lr" not in f.fix


def test_group_seed_variance(train):
    """Two configs x three seeds: the under-trained config varies by several points between
    seeds, the healthy one does not."""
    stable = [train(HEALTHY, **{"train.seed": s}) for s in (0, 1, 2)]
    shaky = [train(UNDERFIT, **{"train.seed": s}) for s in (0, 1, 2)]
    acc = lambda runs: [final_scores(r)["test"]["accuracy"] for r in runs]  # noqa: E731
    std_shaky, std_stable = statistics.stdev(acc(shaky)), statistics.stdev(acc(stable))
    gap = statistics.fmean(acc(stable)) - statistics.fmean(acc(shaky))
    assert std_shaky > 0.03 and gap > std_shaky          # really noisy, and really worse
    assert len({D.config_key(r) for r in stable}) == 1 and D.config_key(stable[0]) != D.config_key(shaky[0])

    findings = D.diagnose_group(stable + shaky)
    flagged = [f for f in findings if f.code == "seed_variance"]
    shaky_f = [f for f in flagged if "train.lr=0.001" in f.title and "train.epochs=2" in f.title]
    assert len(shaky_f) == 1 and f"std {100 * std_shaky:.1f} points" in shaky_f[0].evidence
    # the healthy config is flagged exactly when its own spread crosses the thresholds
    assert (len(flagged) == 2) == (std_stable > D.SEED_STD_MAX or std_stable >= gap), (std_stable, flagged)
    assert "within_noise" not in codes(findings)


def test_write_and_load_or_compute(train, monkeypatch):
    run = train(COLLAPSE)
    written = D.write(run)
    stored = json.loads((run.dir / "diagnostics.json").read_text())
    assert [D.Finding.from_dict(d) for d in stored["findings"]] == written == D.diagnose(run)
    assert not list(run.dir.glob(".diagnostics.json.tmp-*"))

    def boom(_):
        raise AssertionError("recomputed although diagnostics.json is current")
    monkeypatch.setattr(D, "diagnose", boom)
    assert D.load_or_compute(run) == written


# -- hand-made events: thresholds and group rules ----------------------------------------------


def fake_run(store, folder, *, train=(), val=(), test=None, balance=(0.5, 0.5), status="completed",
             **overrides):
    """A stored run with hand-written events: train = [(loss, acc)], val/test = (loss, acc, share_a)
    on 100 validation examples, 50 per class."""
    cfg = tiny_config(folder, **overrides)
    labels = ["a", "b"]
    data = {"task": "single", "num_labels": 2, "sizes": {"train": 400, "validation": 100, "test": 100},
            "majority_class": "a", "majority_baseline_validation": 0.5, "majority_baseline_test": 0.5,
            "train_class_balance": dict(zip(labels, balance)), "mean_tokens": 15.0,
            "truncated_share": {"train": 0.0, "validation": 0.0, "test": 0.0}, "train_padding_waste": 0.05,
            "parameters": 1}
    run = store.create(cfg, labels, task="single", data=data)

    def detail(acc, share_a):
        return {"per_class": {n: {"precision": acc, "recall": acc, "f1": acc, "support": 50} for n in labels},
                "predicted_share": {"a": share_a, "b": 1 - share_a}}
    for i, (loss, acc) in enumerate(train):
        run.log({"split": "train", "step": 10 * (i + 1), "epoch": i + 1.0,
                 "metrics": {"loss": loss, "accuracy": acc, "lr": 1e-3}})
        if i < len(val):
            v = val[i]
            run.log({"split": "validation", "step": 10 * (i + 1), "epoch": i + 1.0,
                     "metrics": {"loss": v[0], "accuracy": v[1], "macro_f1": v[1]},
                     "detail": detail(v[1], v[2])})
    if test is not None:
        for split in ("final_validation", "test"):
            run.log({"split": split, "step": 10, "epoch": 1.0,
                     "metrics": {"loss": test[0], "accuracy": test[1], "macro_f1": test[1]},
                     "detail": detail(test[1], test[2])})
    run.update(status=status)
    return run


def test_prior_entropy_and_prior_loss():
    assert D.prior_entropy({"a": 0.5, "b": 0.5}) == pytest.approx(math.log(2))
    # always predicting (0.8, 0.2) on a 50/50 split
    assert D.prior_loss({"a": 0.8, "b": 0.2}, {"a": 0.5, "b": 0.5}) == pytest.approx(
        -(0.5 * math.log(0.8) + 0.5 * math.log(0.2)))
    # class-weighted (weights 1/(K p)) like fit(): a 50/50 split weighs the rare class 4x
    w = D.prior_loss({"a": 0.8, "b": 0.2}, {"a": 0.5, "b": 0.5}, weighted=True)
    assert w == pytest.approx((0.625 * -math.log(0.8) + 2.5 * -math.log(0.2)) / 3.125)


def test_finding_validates_severity():
    with pytest.raises(ValueError):
        D.Finding("x", "fatal", "t", "e", "f")


def test_train_loss_rise_needs_an_absolute_floor(two_class_csv, store):
    good = [(0.6, 0.7), (0.3, 0.9), (0.001, 1.0), (0.002, 1.0)]        # doubles, but near zero
    run = fake_run(store, two_class_csv, train=good, val=[(0.4, 0.8, 0.5)] * 4, test=(0.4, 0.8, 0.5))
    assert "divergence" not in codes(D.diagnose(run))
    bad = [(0.6, 0.7), (0.3, 0.9), (0.6, 0.7)]                         # doubles by 0.3 > 0.1 ln 2
    run = fake_run(store, two_class_csv, train=bad, val=[(0.4, 0.8, 0.5)] * 3, test=(0.4, 0.8, 0.5))
    f = one(D.diagnose(run), "divergence")
    assert "epoch 3" in f.title and "0.300 -> 0.600" in f.evidence


def test_nonfinite_validation_loss(two_class_csv, store):
    run = fake_run(store, two_class_csv, train=[(0.6, 0.7), (0.5, 0.8)],
                   val=[(0.5, 0.8, 0.5), (float("inf"), 0.5, 1.0)], test=(0.5, 0.8, 0.5))
    f = one(D.diagnose(run), "divergence")
    assert "epoch 2" in f.title and "validation loss is inf" in f.evidence



def test_evaluations_without_a_loss_are_not_divergence(two_class_csv, store):
    """Ranking evaluations log accuracy / MRR / recall@k and no loss: not measured is not NaN."""
    run = fake_run(store, two_class_csv, train=[(0.6, 0.7), (0.5, 0.8)],
                   val=[(0.5, 0.8, 0.5), (0.45, 0.82, 0.5)], test=(0.45, 0.82, 0.5))
    for split, step in (("validation", 40), ("final_validation", 40), ("test", 40)):
        run.log({"split": split, "step": step, "epoch": 4.0, "metrics": {"accuracy": 0.8, "mrr": 0.9}})
    assert "divergence" not in codes(D.diagnose(run))
    run.log({"split": "validation", "step": 50, "epoch": 5.0, "metrics": {"loss": None, "accuracy": 0.8}})
    assert "divergence" in codes(D.diagnose(run))       # a logged null loss still counts as NaN


def test_overfitting_needs_two_evaluations_after_the_minimum(two_class_csv, store):
    train = [(0.6, 0.7), (0.3, 0.9), (0.1, 1.0), (0.05, 1.0)]
    once = [(0.5, 0.8, 0.5), (0.4, 0.8, 0.5), (0.3, 0.85, 0.5), (0.6, 0.8, 0.5)]
    run = fake_run(store, two_class_csv, train=train, val=once, test=(0.3, 0.85, 0.5))
    assert "overfitting" not in codes(D.diagnose(run))
    twice = [(0.5, 0.8, 0.5), (0.3, 0.85, 0.5), (0.4, 0.84, 0.5), (0.6, 0.8, 0.5)]
    run = fake_run(store, two_class_csv, train=train, val=twice, test=(0.3, 0.85, 0.5))
    assert "after epoch 2" in one(D.diagnose(run), "overfitting").title


def test_accuracy_below_majority_with_low_loss(two_class_csv, store):
    # 70/30 training prior: the prior's loss on a 50/50 split is ~0.78; 0.3 is far below it
    run = fake_run(store, two_class_csv, train=[(0.5, 0.8), (0.3, 0.9)],
                   val=[(0.3, 0.4, 0.5), (0.3, 0.4, 0.5)], test=(0.3, 0.4, 0.5), balance=(0.7, 0.3))
    f = one(D.diagnose(run), "metric_loss_mismatch")
    assert "0.400" in f.evidence and "data.labels" in f.fix


def test_incomplete_run_is_noted(two_class_csv, store):
    run = fake_run(store, two_class_csv, train=[(0.6, 0.7)], val=[(0.5, 0.8, 0.5)], status="interrupted")
    f = one(D.diagnose(run), "incomplete")
    assert f.severity == "info" and "resume" in f.fix


def test_load_or_compute_refreshes_when_metrics_change(two_class_csv, store):
    run = fake_run(store, two_class_csv, train=[(0.6, 0.7), (0.5, 0.8)],
                   val=[(0.5, 0.8, 0.5), (0.45, 0.82, 0.5)], test=(0.45, 0.82, 0.5))
    first = D.load_or_compute(run)
    assert (run.dir / "diagnostics.json").exists() and "divergence" not in codes(first)
    run.log({"split": "train", "step": 30, "epoch": 3.0, "metrics": {"loss": float("nan"), "accuracy": 0.5}})
    assert "divergence" in codes(D.load_or_compute(run))
    (run.dir / "diagnostics.json").write_text("{torn")
    assert "divergence" in codes(D.load_or_compute(run))


def test_group_within_noise_and_single_seed(two_class_csv, store):
    def group_run(lr, seed, acc):
        return fake_run(store, two_class_csv, train=[(0.5, 0.8)], val=[(0.4, acc, 0.5)],
                        test=(0.4, acc, 0.5), **{"train.lr": lr, "train.seed": seed})
    a = [group_run(1e-3, s, x) for s, x in enumerate((0.80, 0.86, 0.83))]   # mean .83, std 3 pts
    b = [group_run(2e-3, s, x) for s, x in enumerate((0.82, 0.82, 0.83))]   # mean .823
    findings = D.diagnose_group(a + b)
    f = one(findings, "within_noise")
    assert "train.lr=0.001" in f.evidence and "0.7 points" in f.evidence
    assert "train.lr=0.001" in one(findings, "seed_variance").title
    single = D.diagnose_group([a[0], b[0]])
    assert codes(single) == {"single_seed"}
    running = fake_run(store, two_class_csv, train=[(0.5, 0.8)], status="interrupted")
    assert "group_skipped" in codes(D.diagnose_group([a[0], running]))
