"""Multilabel and regression task kinds: metrics, data shapes, config, and on small slices of the
real builtin:wordnet-multilex / builtin:wordnet-similarity data with a tiny model: run, sweep,
compare (mean ± std, paired), eval --checkpoints, show, predict, report and each diagnostic on a
real run that shows it."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_experiment
from encoderlab import config as C
from encoderlab import kinds
from encoderlab import metrics as M
from encoderlab import predict as P
from encoderlab import sweep as S
from encoderlab import tasks as T
from encoderlab.analysis import compare as CMP
from encoderlab.analysis import diagnose
from encoderlab.cli import main
from encoderlab.data import builtin
from encoderlab.data.dataset import load_data
from encoderlab.errors import DataError


def rows(name: str, split: str, n: int) -> list[dict]:
    out = []
    with gzip.open(builtin.get(name).files[split], "rt", encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line))
            if len(out) >= n:
                break
    return out


# -- metrics ---------------------------------------------------------------------------------------

def test_multilabel_metrics_by_hand():
    y = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
    p = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)
    m = M.multilabel(y, p, ["a", "b", "c"])
    # tp 2, fp 1, fn 1 -> micro-F1 4/6
    assert m["micro_f1"] == pytest.approx(4 / 6)
    assert m["subset_accuracy"] == pytest.approx(1 / 3)
    assert m["hamming_loss"] == pytest.approx(2 / 9)
    assert m["samples_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)     # empty vs empty counts 1
    assert m["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 1}
    assert m["cardinality_true"] == pytest.approx(1.0) and m["cardinality_predicted"] == pytest.approx(1.0)
    assert m["empty_predicted"] == pytest.approx(1 / 3)


def test_regression_metrics_match_scipy():
    from scipy import stats
    y = np.array([0.1, 0.4, 0.35, 0.8, 0.5])
    p = np.array([0.2, 0.3, 0.4, 0.9, 0.45])
    m = M.regression(y, p)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert m["pearson"] == pytest.approx(stats.pearsonr(y, p)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(y, p)[0])
    assert np.isnan(M.regression(y, np.full(5, 0.3))["spearman"])     # constant predictions: undefined


def test_thresholds_are_tuned_for_micro_f1_and_kept_in_meta():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < [0.5, 0.2, 0.05]).astype(np.float32)
    logits = np.where(y > 0, 0.5, -0.5) + rng.normal(0, 0.8, y.shape)      # informative, noisy scores
    task = T.Task("multilabel", ["a", "b", "c"])
    tuned = task.tune(logits.astype(np.float32), y)
    assert tuned["micro_f1_tuned"] >= tuned["micro_f1_at_global"] >= tuned["micro_f1_at_0.5"] - 1e-9
    again = T.Task.from_meta({"labels": ["a", "b", "c"], "task": "multilabel", **task.meta()})
    assert again.thresholds == task.thresholds and again.global_threshold == task.global_threshold


# -- config and data -------------------------------------------------------------------------------

def test_metric_auto_keeps_stored_classification_hashes():
    assert C.config_hash(C.load(None)) == C.config_hash(C.load(None, ["train.metric=accuracy"]))
    ml = C.load(None, ["data.task=multilabel"])
    assert C.config_hash(ml) != C.config_hash(C.load(None, ["data.task=multilabel", "train.metric=accuracy"]))
    assert T.resolve_metric("auto", "multilabel") == "micro_f1"
    assert T.resolve_metric("auto", "regression") == "spearman"
    assert T.resolve_metric("auto", "pair") == "accuracy"
    with pytest.raises(Exception, match="data.task"):
        C.load(None, ["data.task=multi-label"])


@pytest.fixture(scope="module")
def multilex_files(tmp_path_factory):
    """Real wordnet-multilex rows as csv ("|" strings), jsonl (lists) and csv (one 0/1 column per label)."""
    folder = tmp_path_factory.mktemp("multilex")
    for split, n in (("train", 300), ("validation", 80), ("test", 80)):
        r = rows("wordnet-multilex", split, n)
        pd.DataFrame({"text": [x["text"] for x in r], "labels": [x["labels"] for x in r]}) \
            .to_csv(folder / f"{split}.csv", index=False)
        with open(folder / f"{split}.jsonl", "w") as fh:
            for x in r:
                fh.write(json.dumps({"text": x["text"], "labels": x["labels"].split("|")}) + "\n")
        names = ["noun.person", "noun.artifact", "verb.contact"]
        pd.DataFrame({"text": [x["text"] for x in r],
                      **{n: [int(n in x["labels"].split("|")) for x in r] for n in names}}) \
            .to_csv(folder / f"{split}-cols.csv", index=False)
    return folder


def _data(folder, suffix, *extra):
    return C.load(None, [f"data.source={folder}/train{suffix}", f"data.validation={folder}/validation{suffix}",
                         f"data.test={folder}/test{suffix}", "data.task=multilabel", "data.label=labels", *extra]).data


def test_label_sets_from_strings_lists_and_columns(multilex_files):
    a, _ = load_data(_data(multilex_files, ".csv"))
    b, _ = load_data(_data(multilex_files, ".jsonl"))
    assert a.label_names == b.label_names and a.train.labels.shape == (300, len(a.label_names))
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    first = rows("wordnet-multilex", "train", 1)[0]["labels"].split("|")
    assert [a.label_names[j] for j in np.flatnonzero(a.train.labels[0])] == sorted(first)
    cols = 'data.label_columns=["noun.person", "noun.artifact", "verb.contact"]'
    c, _ = load_data(_data(multilex_files, "-cols.csv", cols))
    assert c.label_names == ["noun.person", "noun.artifact", "verb.contact"]
    np.testing.assert_array_equal(c.train.labels[:, 0], a.train.labels[:, a.label_names.index("noun.person")])


def test_unknown_label_and_bad_target_name_the_row(multilex_files, tmp_path):
    df = pd.read_csv(multilex_files / "test.csv")
    df.loc[3, "labels"] = "noun.person|noun.unicorn"
    df.to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match="row 4.*noun.unicorn"):
        load_data(C.load(None, [f"data.source={multilex_files}/train.csv", f"data.test={tmp_path}/test.csv",
                                "data.task=multilabel", "data.label=labels"]).data)
    sim = pd.DataFrame(rows("wordnet-similarity", "train", 50))
    sim["similarity"] = sim["similarity"].astype(object)
    sim.loc[7, "similarity"] = "high"
    sim.to_csv(tmp_path / "sim.csv", index=False)
    with pytest.raises(DataError, match="row 8.*expected a number"):
        load_data(C.load(None, [f"data.source={tmp_path}/sim.csv", "data.task=regression", "data.text=text_a",
                                "data.text_pair=text_b", "data.label=similarity"]).data)


def test_builtins_declare_their_task():
    ml, _ = load_data(C.load(None, ["data.source=builtin:wordnet-multilex", "data.max_train=50"]).data)
    reg, cfg = load_data(C.load(None, ["data.source=builtin:wordnet-similarity", "data.max_train=50"]).data)
    assert ml.task == "multilabel" and ml.train.labels.ndim == 2
    assert reg.task == "regression" and reg.label_names == ["similarity"] and reg.train.pairs is not None


# -- end to end on real slices ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
    """A 2 x 2 sweep of each task on real data with the tiny model (8 runs)."""
    from encoderlab.store.runs import RunStore
    tmp = tmp_path_factory.mktemp("tasks")
    store = RunStore(tmp / "runs")
    out = {"store": store, "tmp": tmp}
    for name, source, sweep in (("ml", "builtin:wordnet-multilex", '"train.class_weights" = ["none", "balanced"]'),
                                ("reg", "builtin:wordnet-similarity", '"train.regression_loss" = ["mse", "huber"]')):
        exp = tiny_experiment(tmp / f"{name}.toml", name, f'source = "{source}"\nmax_train = 300\nmax_eval = 100',
                              encode={"max_length": 48}, sweep=f"seeds = [0, 1]\n{sweep}",
                              train={"epochs": 2, "batch_size": 32, "lr": 1e-3, "keep_final_checkpoints": True})
        out[name] = S.run_sweep(S.expand(exp), store, progress=False)
    return out


def test_runs_are_their_kind_and_beat_nothing_silently(task_runs):
    for name, kind, metric in (("ml", "multilabel", "micro_f1"), ("reg", "regression", "spearman")):
        runs = task_runs[name]
        assert len(runs) == 4 and all(r.status == "completed" for r in runs)
        for r in runs:
            assert kinds.kind_of(r) == kind and r.info["best_metric"] == metric
            assert set(r.info["test_scores"]) == set(T.EVENT_METRICS[kind])
            assert r.info["data"]["baseline"]["test"]
    meta = json.loads((task_runs["ml"][0].dir / "model" / "encoderlab.json").read_text())
    assert len(meta["thresholds"]) == len(meta["labels"]) and meta["task_kind"] == "multilabel"
    meta = json.loads((task_runs["reg"][0].dir / "model" / "encoderlab.json").read_text())
    assert meta["target"]["std"] > 0 and meta["labels"] == ["similarity"]


def test_compare_and_paired_use_the_task_metric(task_runs, capsys):
    ml = task_runs["ml"]
    table = CMP.config_table(ml, metric=T.metric_for_runs(ml))
    assert len(table.rows) == 2 and all(r["n"] == 2 and r["test_std"] is not None for r in table.rows)
    side_a, side_b = CMP.split_by(ml, "train.class_weights", ["none", "balanced"])
    res = CMP.paired(side_a, side_b, metric="micro_f1", split="test")
    assert res.n == 2
    root = str(task_runs["store"].root)
    main(["--store", root, "compare", "--group", "reg", "--format", "json"])
    out = json.loads(capsys.readouterr().out)        # no --metric: the regression runs' Spearman
    mse = [r for r in task_runs["reg"] if r.config().train.regression_loss == "mse"]
    row = next(r for r in out if r["train.regression_loss"] == "mse")
    assert row["test_mean"] == pytest.approx(np.mean([r.info["test_scores"]["spearman"] for r in mse]))
    rmse = CMP.config_table(task_runs["reg"], metric="rmse")      # lower is better: the best is the minimum
    for row in rmse.rows:
        for rid in row["runs"]:
            vals = [ev["metrics"]["rmse"] for ev in task_runs["store"].get(rid).events() if ev["split"] == "validation"]
            assert min(vals) in [f.best_val("rmse") for f in CMP.read_facts([task_runs["store"].get(rid)])]
    main(["--store", root, "compare", "--group", "reg", "--metric", "rmse", "--paired", "train.regression_loss",
          "mse", "huber"])
    assert "rmse" in capsys.readouterr().out


def test_predict_writes_label_sets_and_values(task_runs, tmp_path, capsys):
    ml, reg = task_runs["ml"][0], task_runs["reg"][0]
    r = rows("wordnet-multilex", "test", 30)
    pd.DataFrame({"text": [x["text"] for x in r], "labels": [x["labels"] for x in r]}) \
        .to_csv(tmp_path / "ml.csv", index=False)
    df, scores = P.predict(ml, str(tmp_path / "ml.csv"))
    meta = json.loads((ml.dir / "model" / "encoderlab.json").read_text())
    probs = df[[f"p_{n}" for n in meta["labels"]]].to_numpy()
    expect = ["|".join(n for n, p, t in zip(meta["labels"], row, meta["thresholds"]) if p >= t) for row in probs]
    assert df["predicted"].fillna("").tolist() == expect          # the stored thresholds decide
    assert 0 <= scores["micro_f1"] <= 1
    ens, scores = P.predict(task_runs["ml"][:2], str(tmp_path / "ml.csv"))
    assert set(scores["members"]) == {x.id for x in task_runs["ml"][:2]}
    pd.DataFrame(rows("wordnet-similarity", "test", 30)).drop(columns="similarity") \
        .to_csv(tmp_path / "s.csv", index=False)
    main(["--store", str(task_runs["store"].root), "predict", reg.id, str(tmp_path / "s.csv"),
          "-o", str(tmp_path / "o.csv")])
    out = pd.read_csv(tmp_path / "o.csv")
    assert out["predicted"].dtype.kind == "f" and len(out) == 30


def test_show_eval_checkpoints_and_report(task_runs, tmp_path, capsys):
    root = str(task_runs["store"].root)
    for name, words in (("ml", ["micro-F1", "baseline (train-frequent labels)", "thresholds tuned"]),
                        ("reg", ["Spearman", "baseline (train mean)", "prediction"])):
        run = task_runs[name][0]
        main(["--store", root, "show", run.id])
        out = capsys.readouterr().out
        assert all(w in out for w in words), out
        main(["--store", root, "show", run.id, "--per-class"])
        out = capsys.readouterr().out
        assert ("test, per label" in out and "predicted" in out) == (name == "ml"), out
        main(["--store", root, "eval", run.id, "--checkpoints", "all", "--format", "json"])
        ev = json.loads(capsys.readouterr().out)
        assert len(ev) == 2 and T.DEFAULT_METRIC[name == "ml" and "multilabel" or "regression"] in ev[0]
    main(["--store", root, "report", "--group", "ml", "-o", str(tmp_path / "r.html")])
    assert (tmp_path / "r.html").stat().st_size > 1000


# -- each diagnostic on a real run that shows it ---------------------------------------------------------

def test_multilabel_diagnostics_on_real_runs(task_runs, tmp_path):
    """Rare labels only (noun.relation, verb.weather, noun.feeling, noun.process: most examples have
    none): the tiny model's probabilities stay under 0.5 at every evaluation (empty-set collapse),
    tuning then switches labels on for everyone (always on), and some labels are never predicted."""
    from encoderlab.store.runs import RunStore
    from encoderlab.train.fit import fit
    rare = {"noun.relation", "verb.weather", "noun.feeling", "noun.process"}
    for split, n in (("train", 400), ("validation", 100), ("test", 100)):
        r = rows("wordnet-multilex", split, n)
        pd.DataFrame({"text": [x["text"] for x in r],
                      "labels": ["|".join(lab for lab in x["labels"].split("|") if lab in rare) for x in r]}) \
            .to_csv(tmp_path / f"{split}.csv", index=False)
    cfg = C.load(None, [f"data.source={tmp_path}/train.csv", f"data.validation={tmp_path}/validation.csv",
                        f"data.test={tmp_path}/test.csv", "data.task=multilabel", "data.label=labels",
                        "train.epochs=3", "train.lr=1e-2", "train.batch_size=32", "train.threads=1",
                        *[f"model.{k}={json.dumps(v)}" for k, v in __import__("conftest").TINY_MODEL.items()]])
    run = fit(cfg, RunStore(tmp_path / "runs"), progress=False)
    codes = {f.code: f for f in diagnose.diagnose(run)}
    assert {"empty_set_collapse", "always_on_labels", "labels_never_predicted"} <= set(codes), codes


def test_regression_diagnostics_on_real_runs(tmp_path):
    """A learning rate of 1e-6 leaves the predictions constant; training only on similarities up to
    0.25 leaves most validation / test targets (up to 0.5) outside the train range."""
    from encoderlab.store.runs import RunStore
    from encoderlab.train.fit import fit
    tiny = [f"model.{k}={json.dumps(v)}" for k, v in __import__("conftest").TINY_MODEL.items()]
    store = RunStore(tmp_path / "runs")
    run = fit(C.load(None, ["data.source=builtin:wordnet-similarity", "data.max_train=300", "data.max_eval=100",
                            "train.epochs=1", "train.lr=1e-6", "train.threads=1", *tiny]), store, progress=False)
    assert "constant_predictions" in {f.code for f in diagnose.diagnose(run)}
    for split, n in (("train", 900), ("validation", 100), ("test", 100)):
        df = pd.DataFrame(rows("wordnet-similarity", split, n))
        (df[df.similarity <= 0.25] if split == "train" else df).to_csv(tmp_path / f"{split}.csv", index=False)
    run = fit(C.load(None, [f"data.source={tmp_path}/train.csv", f"data.validation={tmp_path}/validation.csv",
                            f"data.test={tmp_path}/test.csv", "data.task=regression", "data.text=text_a",
                            "data.text_pair=text_b", "data.label=similarity", "train.epochs=1", "train.threads=1",
                            *tiny]), store, progress=False)
    f = {f.code: f for f in diagnose.diagnose(run)}["targets_outside_train_range"]
    assert f.severity == "warning" and "0.250" in f.evidence


@pytest.mark.slow
def test_distill_export_and_bench_take_these_runs(task_runs, capsys):
    """The cost verbs read the run's task from its model: a distilled student keeps the task (own
    thresholds / the teacher's target scale), an exported ONNX run scores like its parent."""
    root = str(task_runs["store"].root)
    for name, metric in (("ml", "micro_f1"), ("reg", "spearman")):
        teacher = task_runs[name][0]
        assert main(["--store", root, "distill", teacher.id, "compress.layers=first:1", "train.epochs=1",
                     f"name={name}-student", "--quiet"]) == 0
        student = task_runs["store"].get(f"{name}-student")
        assert student.status == "completed" and student.info["best_metric"] == metric
        assert set(student.info["test_scores"]) == set(T.EVENT_METRICS[T.family(teacher.info["task"])])
        assert main(["--store", root, "export", teacher.id, "--name", f"{name}-onnx"]) == 0
        onnx = task_runs["store"].get(f"{name}-onnx")
        assert onnx.info["test_scores"][metric] == pytest.approx(teacher.info["test_scores"][metric], abs=0.02)
        assert main(["--store", root, "bench", teacher.id, "--batches", "2", "--rounds", "1", "--warmup", "1",
                     "--batch-sizes", "4"]) == 0
        main(["--store", root, "show", student.id])
        assert T.SHORT[metric] in capsys.readouterr().out
