"""Comparison layer: tables across seeds / datasets / epochs / checkpoints, paired tests, rendering.

The main tests read a real sweep (2 learning rates x 3 seeds of the tiny model, 1 epoch) trained
once per module; the rest use hand-made numbers or runs whose events are written directly."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import tiny_experiment, tiny_config, two_class_data_toml
from test_stats import brute_force_p
from encoderlab import sweep as S
from encoderlab.analysis import compare as X
from encoderlab.analysis import render as R
from encoderlab.analysis.tables import epoch_table
from encoderlab.errors import ConfigError
from encoderlab.store.runs import RunStore


# ---------------------------------------------------------------------------------------------
# a real sweep, trained once


@pytest.fixture(scope="module")
def sweep_store(two_class_csv, tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    path = tiny_experiment(folder / "exp.toml", "cmp", two_class_data_toml(two_class_csv) + "\nmax_train = 160",
                           encode={"max_length": 48}, train={"eval_every_steps": 5, "keep_final_checkpoints": True},
                           sweep='"train.lr" = [3e-3, 3e-4]\nseeds = [0, 1, 2]')
    store = RunStore(folder / "runs")
    points = S.expand(path)
    assert len(points) == 6
    threads = torch.get_num_threads()     # 1 thread: tiny matrices, and a CPU shared with others
    try:
        runs = S.run_sweep(points, store, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert all(r.status == "completed" for r in runs)
    yield store
    store.close()


def _test_acc(run):
    return [e for e in run.events() if e["split"] == "test"][-1]["metrics"]["accuracy"]


def test_config_table_one_row_per_configuration(sweep_store):
    runs = X.select(sweep_store, group="cmp")
    assert len(runs) == 6
    table = X.config_table(runs)
    assert table.varied == ["train.lr"]
    assert table.columns[0][0] == "train.lr"
    assert [r["train.lr"] for r in table.rows] == [3e-3, 3e-4]
    assert "train.seed" not in table.fixed and "name" not in table.fixed
    assert table.fixed["model.hidden_size"] == 16 and table.fixed["train.epochs"] == 1
    assert "status" not in [c[0] for c in table.columns]          # all completed
    fixed = {r["key"]: r["value"] for r in X.fixed_rows(table.fixed)}
    assert fixed["model.hidden_size"] == "16" and fixed["data.max_train"] == "160"
    assert "train.weight_decay" not in fixed and "train.lr" not in fixed   # default / varied
    assert list(table.fixed)[:len(fixed)] == list(fixed)                 # set fields listed first
    by_lr = {lr: [r for r in runs if r.config().train.lr == lr] for lr in (3e-3, 3e-4)}
    for row in table.rows:
        group = by_lr[row["train.lr"]]
        assert row["n"] == 3 and row["seeds"] == "0,1,2"
        assert sorted(row["runs"]) == sorted(r.id for r in group)
        val = np.array([r.info["best_value"] for r in group])
        test = np.array([_test_acc(r) for r in group])
        assert row["val_mean"] == pytest.approx(val.mean(), abs=1e-12)
        assert row["val_std"] == pytest.approx(val.std(ddof=1), abs=1e-12)
        assert row["test_mean"] == pytest.approx(test.mean(), abs=1e-12)
        assert row["test_std"] == pytest.approx(test.std(ddof=1), abs=1e-12)
        assert row["test"] == f"{test.mean():.4f} ± {test.std(ddof=1):.4f}"
        assert row["val_n"] == row["test_n"] == 3
        assert 0 < row["best_epoch"] <= 1
    # another metric comes from the validation events, not run.json
    f1 = X.config_table(runs, metric="macro_f1").rows[0]
    group = by_lr[3e-3]
    best = [max(e["metrics"]["macro_f1"] for e in r.events() if e["split"] == "validation") for r in group]
    assert f1["val_mean"] == pytest.approx(np.mean(best), abs=1e-12)


def test_paired_matches_scipy_andbrute_force_permutation(sweep_store):
    runs = X.select(sweep_store, group="cmp")
    a, b = X.split_by(runs, "train.lr", ["0.003", 3e-4])           # CLI strings match typed values
    assert len(a) == len(b) == 3
    res = X.paired(a, b)
    assert res.n == 3 and not res.unmatched
    assert res.differs == {"train.lr": (3e-3, 3e-4)}
    assert (res.label_a, res.label_b) == ("lr=0.003", "lr=0.0003")
    seed_of = {r.id: r.config().train.seed for r in runs}
    xa = [_test_acc(r) for r in sorted(a, key=lambda r: seed_of[r.id])]
    xb = [_test_acc(r) for r in sorted(b, key=lambda r: seed_of[r.id])]
    assert [p["seed"] for p in res.pairs] == [0, 1, 2]
    assert [p["a"] for p in res.pairs] == xa and [p["b"] for p in res.pairs] == xb
    d = np.array(xb) - np.array(xa)
    assert res.mean_a == pytest.approx(np.mean(xa)) and res.mean_b == pytest.approx(np.mean(xb))
    assert res.diff_mean == pytest.approx(d.mean())
    if d.std() > 0:
        ref = stats.ttest_rel(xb, xa)
        assert res.t == pytest.approx(ref.statistic) and res.p_t == pytest.approx(ref.pvalue)
        lo, hi = stats.t.interval(0.95, 2, loc=d.mean(), scale=d.std(ddof=1) / np.sqrt(3))
        assert (res.ci_low, res.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert res.p_perm == pytest.approx(brute_force_p(d))
    names = [t["test"] for t in res.tests]
    assert names[0].startswith("paired t-test") and "exact" in names[1] and "2^3" in names[1]
    assert any("smallest possible permutation p-value is 0.25" in w for w in res.warnings)
    text = res.text()
    assert "paired t-test" in text and "sign-flip permutation test" in text
    json.dumps(res.to_dict())                                       # JSON-able
    assert res.pairs_table().render("csv").count("\n") == 4


def test_unmatched_runs_are_reported(sweep_store):
    runs = X.select(sweep_store, group="cmp")
    a, b = X.split_by(runs, "train.lr", [3e-3, 3e-4])
    b = [r for r in b if r.config().train.seed != 2]
    res = X.paired(a, b)
    assert res.n == 2
    left = [u for u in res.unmatched]
    assert len(left) == 1 and left[0]["side"] == "a" and left[0]["seed"] == 2
    assert any("left out" in w and left[0]["id"] in w for w in res.warnings)
    assert any("only 2 pairs" in w for w in res.warnings)
    assert res.unmatched_table().rows[0]["reason"].startswith("no run on the other side")


def test_renderings_round_trip(sweep_store):
    table = X.config_table(X.select(sweep_store, group="cmp"))
    # markdown: the human view, cell for cell
    md = table.render("markdown").strip().splitlines()[2:]
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert header == [h for _, h, *_ in table.columns]
    for line, row in zip(md[2:], table.rows):
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert cells == [R.format_value(row.get(k), f[0] if f else None, k) for k, _, *f in table.columns]
    # csv and json: the machine view with full precision
    back = list(csv.DictReader(io.StringIO(table.render("csv"))))
    for got, row in zip(back, table.rows):
        for key in ("val_mean", "val_std", "test_mean", "test_std", "train.lr"):
            assert float(got[key]) == row[key]
        assert int(got["n"]) == 3 and got["runs"] == ";".join(row["runs"])
    for got, row in zip(json.loads(table.render("json")), table.rows):
        assert {k: got[k] for k in ("val_mean", "test_std", "n", "runs")} == \
               {k: row[k] for k in ("val_mean", "test_std", "n", "runs")}
    text = table.render("table")
    assert "train.lr" in text and "±" in text and "0.003" in text


def test_epochs_side_by_side(sweep_store):
    runs = X.select(sweep_store, group="cmp")[:2]
    t = X.epochs_side_by_side(runs)
    labels = X.run_labels(runs)
    assert labels == ["seed=0", "seed=1"]
    assert [r["epoch"] for r in t.rows] == [0.5, 1.0]               # eval every 5 of 10 steps
    for run, lab in zip(runs, labels):
        hist = epoch_table(run)
        assert [r[f"{lab}/val_acc"] for r in t.rows] == [h["val_acc"] for h in hist]
        assert t.rows[-1][f"{lab}/train_loss"] == hist[-1]["train_loss"]
    one = X.epochs_side_by_side(runs[0])
    assert [c[0] for c in one.columns][:3] == ["epoch", "step", "train_loss"]


def test_checkpoint_table_with_re_evaluations(sweep_store):
    run = X.select(sweep_store, group="cmp")[0]
    for ck in run.checkpoints:           # what a re-evaluation command writes
        step = int(ck.name.split("-")[1])
        run.log({"split": "eval:test", "step": step, "epoch": step / 10,
                 "metrics": {"loss": 0.5, "accuracy": step / 100, "macro_f1": 0.4},
                 "detail": {"checkpoint": ck.name}})
    t = X.checkpoint_table(run)
    assert [r["step"] for r in t.rows] == [5, 10]
    keys = [c[0] for c in t.columns]
    assert {"validation/accuracy", "test/accuracy", "eval:test/accuracy"} <= set(keys)
    assert keys.index("validation/loss") < keys.index("test/loss") < keys.index("eval:test/loss")
    vals = {e["step"]: e["metrics"]["accuracy"] for e in run.events() if e["split"] == "validation"}
    assert [r["validation/accuracy"] for r in t.rows] == [vals[5], vals[10]]
    on_disk = {c.name for c in run.checkpoints}
    assert [r["eval:test/accuracy"] for r in t.rows] == [
        s / 100 if f"step-{s}" in on_disk else None for s in (5, 10)]
    best_step = [e for e in run.events() if e["split"] == "test"][-1]["step"]
    assert [r["step"] for r in t.rows if r["best"]] == [best_step]
    assert all(r["on_disk"] == (r["checkpoint"] in on_disk) for r in t.rows)


def test_split_by_errors(sweep_store):
    runs = X.select(sweep_store, group="cmp")
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        X.split_by(runs, "train.lrr", [1])
    with pytest.raises(ConfigError, match="values present: 0.003, 0.0003"):
        X.split_by(runs, "train.lr", [0.1])
    assert X.distinct(runs, "train.seed") == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# runs with hand-written events (no training)


def _fake(store, folder, *, test=None, val=None, status="completed", **overrides):
    cfg = tiny_config(folder, **overrides)
    run = store.create(cfg, ["a", "b"])
    for step, v in enumerate(val or [], 1):
        run.log({"split": "validation", "step": step, "epoch": float(step),
                 "metrics": {"loss": 1 - v, "accuracy": v, "macro_f1": v}})
    if val:
        run.update(best_metric="accuracy", best_value=max(val))
    if test is not None:
        run.log({"split": "test", "step": 1, "epoch": 1.0, "metrics": {"loss": 1 - test, "accuracy": test,
                                                                       "macro_f1": test}})
    run.update(status=status)
    return run


def test_dataset_table_means_over_datasets(store, tmp_path):
    scores = {("pretrained", "books", 0): 0.80, ("pretrained", "books", 1): 0.84,
              ("pretrained", "dvd", 0): 0.70, ("pretrained", "dvd", 1): 0.72,
              ("random", "books", 0): 0.60, ("random", "books", 1): 0.64,
              ("random", "dvd", 0): 0.50, ("random", "dvd", 1): 0.56}
    for (init, ds, seed), acc in scores.items():
        folder = tmp_path / ds
        _fake(store, folder, test=acc, val=[acc], model__init=init, train__seed=seed, data__max_train=100)
    t = X.dataset_table(X.select(store))
    assert t.varied == ["model.init"]
    assert [c[0] for c in t.columns] == ["model.init", "n", "books", "dvd", "avg"]
    assert t.fixed["datasets"] == {"books": str(tmp_path / "books" / "train.csv"),
                                   "dvd": str(tmp_path / "dvd" / "train.csv")}
    row = next(r for r in t.rows if r["model.init"] == "pretrained")
    assert row["n"] == 4
    assert row["books_mean"] == pytest.approx(0.82) and row["books_std"] == pytest.approx(np.std([.8, .84], ddof=1))
    assert row["avg_mean"] == pytest.approx((0.82 + 0.71) / 2)
    assert row["avg_std"] == pytest.approx(np.std([(0.80 + 0.70) / 2, (0.84 + 0.72) / 2], ddof=1))
    assert row["books"] == "0.8200 ± 0.0283"
    rand = next(r for r in t.rows if r["model.init"] == "random")
    assert rand["avg_mean"] == pytest.approx((0.62 + 0.53) / 2)
    assert not t.warnings


def test_config_table_with_unfinished_runs(store, tmp_path):
    _fake(store, tmp_path, test=0.8, val=[0.7, 0.75], train__seed=0)
    _fake(store, tmp_path, test=0.9, val=[0.8], train__seed=1)
    _fake(store, tmp_path, val=[0.6], train__seed=2, status="interrupted")
    _fake(store, tmp_path, test=0.5, val=[0.5], train__seed=0, train__lr=1e-5)
    assert len(X.select(store)) == 3                                   # completed only by default
    runs = X.select(store, status=None)
    t = X.config_table(runs)
    assert [c[0] for c in t.columns][-1] == "status"
    first = next(r for r in t.rows if r["n"] == 3)
    second = next(r for r in t.rows if r["n"] == 1)
    assert first["test_n"] == 2 and first["val_n"] == 3
    assert first["status"] == "2 completed, 1 interrupted"
    assert first["test"] == "0.8500 ± 0.0707 (n=2 of 3)"
    assert first["val_mean"] == pytest.approx(np.mean([0.75, 0.8, 0.6]))
    assert second["test_std"] is None and second["test"] == "0.5000"
    assert second["train.lr"] == 1e-5 and "1e-05" in t.render("table")
    assert any("single run" in w for w in t.warnings)
    done = [r.id for r in runs if r.status == "completed"]
    stopped = [r.id for r in runs if r.status == "interrupted"]
    assert [r.id for r in X.select(store, ids=done[::-1])] == done[::-1]          # order as given
    assert [r.id for r in X.select(store, ids=stopped)] == []                     # not completed
    assert [r.id for r in X.select(store, ids=stopped, status="interrupted")] == stopped


def test_short_names():
    assert X.short_names(["builtin:wordnet-lexname"]) == {"builtin:wordnet-lexname": "wordnet-lexname"}
    assert X.short_names(["/d/books/train.csv", "/d/dvd/train.csv"]) == \
        {"/d/books/train.csv": "books", "/d/dvd/train.csv": "dvd"}
    assert X.short_names(["/d/a/x.tsv", "/e/a/x.tsv", "/d/b.csv"]) == \
        {"/d/a/x.tsv": "d/a/x", "/e/a/x.tsv": "e/a/x", "/d/b.csv": "d/b"}
    assert X.short_names(["/d/books/train.csv"]) == {"/d/books/train.csv": "books"}


# ---------------------------------------------------------------------------------------------
# rendering


def test_render_formats():
    rows = [{"name": "a|b", "lr": 1e-5, "acc": 0.812345, "n": 3, "std": None},
            {"name": "c", "lr": 3e-4, "acc": float("nan"), "n": 1, "std": 0.01}]
    cols = [("name", "name"), ("lr", "lr", "g"), ("acc", "accuracy"), ("n", "n"), ("std", "std")]
    md = R.render(rows, cols, "markdown")
    assert md.splitlines()[0] == "| name | lr | accuracy | n | std |"
    assert md.splitlines()[1] == "|---|---:|---:|---:|---:|"
    aligned = R.render([{"x": "0.8123 ± 0.0101 (n=2 of 3)"}, {"x": "1e-05"}], ["x"], "markdown")
    assert aligned.splitlines()[1] == "|---:|"
    assert R.render([{"x": "20261123-194822-cmp"}, {"x": "0,1,2"}], ["x"], "markdown").splitlines()[1] == "|---|"
    assert md.splitlines()[2] == "| a\\|b | 1e-05 | 0.8123 | 3 | - |"
    back = list(csv.DictReader(io.StringIO(R.render(rows, cols, "csv"))))
    assert back[0] == {"name": "a|b", "lr": "1e-05", "acc": "0.812345", "n": "3", "std": ""}
    assert float(back[1]["std"]) == 0.01 and back[1]["acc"] == ""
    js = json.loads(R.render(rows, cols, "json"))
    assert js[0]["acc"] == 0.812345 and js[1]["acc"] is None and js[0]["std"] is None
    table = R.render(rows, cols, "table", title="t")
    assert "a|b" in table and "0.8123" in table and "1e-05" in table
    assert R.format_value(2e-6, 4) == "2e-06" and R.format_value(0.0, 4) == "0.0000"
    assert R.format_value(True) == "true" and R.format_value([1, 2]) == "1, 2"
    assert R.format_value(1.23456, key="epoch") == "1.23"
    with pytest.raises(ValueError, match="unknown format"):
        R.render(rows, cols, "xml")
