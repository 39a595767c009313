"""Interleaved latency / throughput benchmark of stored runs, its stored results, the trade-off
table and Pareto plot read back from the store, and the cost CLI verbs end to end."""

from __future__ import annotations

import json

import pytest

from encoderlab.analysis import tradeoff as TO
from encoderlab.cli import main
from encoderlab.cost import bench, derive


@pytest.fixture(scope="module")
def family(tiny_teacher):
    store, teacher = tiny_teacher
    small, _ = derive.truncate_run(store, teacher, "first:1", name="small")
    onnx, _ = derive.export_run(store, small, name="small-onnx")
    return store, teacher, small, onnx


def test_fixed_batches_have_the_asked_shape_and_real_tokens(tiny_teacher):
    from encoderlab.cost.runtime import Predictor
    store, teacher = tiny_teacher
    p = Predictor(teacher.dir / "model", "torch")
    _, enc = derive.scored_splits(teacher.config(), p.tokenizer)
    b = bench.fixed_batches(enc["test"], 4, 24, 2)
    assert len(b) == 2 and tuple(b[0]["input_ids"].shape) == (4, 24)
    assert int(b[0]["input_ids"][0, 0]) == p.tokenizer.cls_token_id
    assert int(b[0]["input_ids"][0, -1]) == p.tokenizer.sep_token_id
    d = bench.data_batches(enc["test"], 8, 3, 0)
    assert len(d) == 3 and d[0]["attention_mask"].sum() == sum(enc["test"].lengths[:8])


def test_bench_interleaves_stores_and_feeds_the_tradeoff_table(family):
    store, teacher, small, onnx = family
    rows = bench.bench_targets(store, [teacher.id, f"{small.id}@torch-int8", f"{small.id}@torch-int8-legacy",
                                       onnx.id], batch_sizes=(8,),
                               seq_lens=(0, 16), n_batches=2, rounds=2, warmup=1, train_steps=2)
    assert len(rows) == 8
    # torchao and the deprecated torch.ao path are two rows of one session, with their own sizes
    int8 = {r["runtime"]: r for r in rows if r["seq_len"] == "data" and r["runtime"].startswith("torch-int8")}
    assert set(int8) == {"torch-int8", "torch-int8-legacy"}
    assert all(0 < r["size_mb"] < rows[0]["size_mb"] for r in int8.values())
    ref = [r for r in rows if r["target"].startswith("teacher@torch")]
    assert all(r["latency_change_pct"] == 0 for r in ref) and ref[0]["train_tokens_per_s"] > 0
    for r in rows:
        assert r["latency_p50_ms"] > 0 and r["examples_per_s"] > 0 and r["tokens_per_s"] > 0
        assert r["latency_p95_ms"] >= r["latency_p50_ms"] and r["threads"] == 1 and len(r["load_average"]) == 3
        assert r["batches_timed"] == 4
    fixed = [r for r in rows if r["seq_len"] == 16]
    assert all(r["mean_tokens_per_example"] == 16 for r in fixed)
    assert rows[0]["parameters"] > rows[1]["parameters"]                 # 2 layers vs 1
    stored = json.loads((onnx.dir / "bench.json").read_text())
    assert {r["runtime"] for r in stored} == {"onnx"} and len(stored) == 2
    table, meta = TO.table([teacher, small, onnx])
    assert meta["batch_size"] == 8 and meta["reference"].startswith("teacher@torch")
    assert {r["target"].split("@")[1] for r in table} == {"torch", "torch-int8", "torch-int8-legacy", "onnx"}
    # the truncated run was scored in PyTorch fp32: served as int8 its accuracy is not known
    assert next(r for r in table if r["runtime"] == "torch-int8")["accuracy"] is None
    teach = next(r for r in table if r["target"] == meta["reference"])
    assert teach["accuracy_change"] == 0 and teach["size_change_pct"] == 0
    # the fastest row with a known accuracy is on the front (rows without accuracy never are; which
    # runtime is fastest on a busy 2-core machine varies, so the test must not assume it)
    fastest = min((r for r in table if r["accuracy"] is not None), key=lambda r: r["latency_p50_ms"])
    assert fastest["pareto"] == "yes"
    png = TO.pareto_plot(table)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_flags():
    rows = [{"latency_p50_ms": 10, "accuracy": 0.8}, {"latency_p50_ms": 5, "accuracy": 0.7},
            {"latency_p50_ms": 12, "accuracy": 0.75}, {"latency_p50_ms": 4, "accuracy": None}]
    assert [TO._pareto(r, rows) for r in rows] == [True, True, False, False]


def test_cli_truncate_bench_tradeoff_report(family, tmp_path, capsys):
    store, teacher, small, onnx = family
    root = str(store.root)
    assert main(["--store", root, "truncate", teacher.id, "--layers", "0", "--name", "cli-L1"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["--store", root, "bench", teacher.id, "cli-L1", "--batches", "2", "--rounds", "1",
                 "--warmup", "1", "--batch-sizes", "4"]) == 0
    out = capsys.readouterr().out
    assert "p50 ms" in out and "load average" in out
    assert main(["--store", root, "tradeoff", teacher.id, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["target"] for r in rows} == {"teacher@torch", "cli-L1@torch"}
    assert main(["--store", root, "report", "--name", "*", "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "Cost trade-off" in html and "Pareto plot" in html
    assert main(["--store", root, "bench", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["--store", root, "truncate", teacher.id, "--layers", "first:5"]) == 2
    assert "compress.layers" in capsys.readouterr().err


def test_bench_sessions_within_one_second_stay_apart():
    """The session id is the start time; two benches in the same second (as in this file's tests on
    an idle machine) must not merge into one session, and ids still sort by time."""
    import time
    a = bench.environment(1)["time"]
    time.sleep(0.002)
    b = bench.environment(1)["time"]
    assert a < b and len(a) == len(b) == len("2026-11-29T15:10:03.123456Z")
