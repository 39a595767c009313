"""The machine's defaults: precision chosen by a measured probe (mocked both ways here), threads
from the cores available, and the `doctor` report."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from encoderlab import cli, machine

from conftest import tiny_config


@pytest.fixture
def probe_says(monkeypatch, tmp_path):
    """Replace the matmul measurement: {"fp32": GFLOP/s, "bf16": GFLOP/s}; fresh cache and decisions."""
    monkeypatch.setenv("ENCODERLAB_CACHE", str(tmp_path / "cache"))
    machine._resolve.cache_clear()
    machine._warned.clear()
    monkeypatch.setattr(machine, "_busy", lambda: None)     # a quiet machine unless a test says otherwise
    calls = []

    def set_(fp32: float, bf16: float):
        def fake(dtype_name, shape=machine.PROBE_SHAPE, seconds=0.0):
            calls.append(dtype_name)
            return {"fp32": fp32, "bf16": bf16}[dtype_name]
        monkeypatch.setattr(machine, "_gflops", fake)
        return calls
    yield set_
    machine._resolve.cache_clear()
    machine._warned.clear()


def test_auto_picks_bf16_where_it_is_measured_faster(probe_says):
    probe_says(fp32=70.0, bf16=300.0)
    p = machine.resolve("auto", "cpu")
    assert p.name == "bf16"
    assert p.reason == "bf16: bf16 matmul 300.0 GFLOP/s vs fp32 70.0 GFLOP/s on this CPU"


def test_auto_picks_fp32_where_bf16_is_slow(probe_says):
    probe_says(fp32=113.0, bf16=1.1)
    p = machine.resolve("auto", "cpu")
    assert p.name == "fp32"
    assert "bf16 matmul 1.1 GFLOP/s vs fp32 113.0 GFLOP/s" in p.reason
    from encoderlab.train.fit import autocast
    with autocast(torch.device("cpu"), "auto"):
        assert not torch.is_autocast_enabled("cpu")


def test_a_tie_is_not_worth_bf16(probe_says):
    probe_says(fp32=100.0, bf16=105.0)      # within the 10 % margin
    assert machine.resolve("auto", "cpu").name == "fp32"


def test_explicit_fp32_needs_no_probe(probe_says):
    calls = probe_says(fp32=1.0, bf16=1000.0)
    assert machine.resolve("fp32", "cpu").name == "fp32"
    assert calls == []


def test_explicit_bf16_on_a_slow_cpu_runs_but_warns_once(probe_says):
    probe_says(fp32=100.0, bf16=2.0)
    with pytest.warns(UserWarning, match=r"bf16 matmul 2.0 GFLOP/s vs fp32 100.0 GFLOP/s on this CPU \(50.0x slower\)"):
        p = machine.resolve("bf16", "cpu")
    assert p.name == "bf16"
    from encoderlab.train.fit import autocast
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu")
    machine._resolve.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # the second decision does not warn again
        assert machine.resolve("bf16", "cpu").name == "bf16"


def test_explicit_bf16_on_a_fast_cpu_does_not_warn(probe_says):
    probe_says(fp32=100.0, bf16=300.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert machine.resolve("bf16", "cpu").name == "bf16"


def test_probe_is_cached_per_machine(probe_says, tmp_path):
    calls = probe_says(fp32=50.0, bf16=10.0)
    first = machine.probe()
    assert first["cached"] is False and calls == ["fp32", "bf16"] * machine.PROBE_ROUNDS
    again = machine.probe()
    assert again["cached"] is True and (again["fp32"], again["bf16"]) == (50.0, 10.0)
    assert calls == ["fp32", "bf16"] * machine.PROBE_ROUNDS   # not measured twice
    cache = json.loads((tmp_path / "cache" / "machine.json").read_text())
    assert len(cache) == 1 and list(cache.values())[0]["torch"] == torch.__version__
    machine.probe(refresh=True)
    assert calls == ["fp32", "bf16"] * machine.PROBE_ROUNDS * 2


def test_cuda_without_bf16_stays_fp32(probe_says, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert machine.resolve("auto", "cuda").name == "fp32"
    machine._resolve.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert machine.resolve("auto", "cuda").name == "bf16"


def test_threads_default_to_the_cores_available(monkeypatch):
    monkeypatch.setattr(machine, "THREADS_DEFAULT", 0)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 3, 5})
    monkeypatch.setattr(machine, "_cgroup_quota", lambda: None)
    before = torch.get_num_threads()
    try:
        assert machine.apply_threads(0) == (3, "3 CPU(s) in this process's affinity mask")
        assert torch.get_num_threads() == 3
        monkeypatch.setattr(machine, "_cgroup_quota", lambda: 2)
        assert machine.apply_threads(0) == (2, "cgroup CPU quota of 2 (affinity allows 3)")
        assert machine.apply_threads(1) == (1, "train.threads")
    finally:
        torch.set_num_threads(before)


def test_fit_records_precision_and_threads(tmp_path, probe_says, two_class_csv):
    probe_says(fp32=100.0, bf16=2.0)
    from encoderlab.store.runs import RunStore
    from encoderlab.train.fit import fit
    cfg = tiny_config(two_class_csv, train__precision="auto", train__epochs=1, train__max_steps=2)
    run = fit(cfg, RunStore(tmp_path / "runs"), progress=False)
    info = run.info
    assert info["precision"] == "fp32"
    assert info["precision_reason"] == "fp32: bf16 matmul 2.0 GFLOP/s vs fp32 100.0 GFLOP/s on this CPU"
    assert info["threads"] == 1 and info["threads_reason"]
    assert cfg.train.precision == "auto"          # the config keeps what the user asked for


def test_doctor_reports_the_machine(tmp_path, probe_says, capsys):
    probe_says(fp32=80.0, bf16=4.0)
    assert cli.main(["--store", str(tmp_path / "runs"), "doctor", "--json"]) in (0, None)
    rep = json.loads(capsys.readouterr().out)
    assert rep["matmul_gflops"]["fp32"] == 80.0 and rep["matmul_gflops"]["bf16"] == 4.0
    assert rep["runs_use"]["precision"] == "fp32"
    assert rep["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert rep["cpu"]["cores_available"] >= 1
    assert rep["versions"]["torch"] == torch.__version__.split("+")[0] or rep["versions"]["torch"] == torch.__version__
    assert rep["store"]["exists"] is False and rep["store"]["free_gb"] > 0
    cli.main(["--store", str(tmp_path / "runs"), "doctor"])
    out = capsys.readouterr().out
    assert "fp32 80.0 GFLOP/s, bf16 (autocast) 4.0 GFLOP/s" in out
    assert "precision fp32: bf16 matmul 4.0 GFLOP/s vs fp32 80.0 GFLOP/s on this CPU" in out


def test_compile_choice_rules():
    assert machine.compile_choice("off", 10_000, "cpu") == (False, "train.compile = 'off'")
    assert machine.compile_choice("on", 1, "cpu") == (True, "train.compile = 'on'")
    on, why = machine.compile_choice("auto", 10_000, "cpu")
    assert not on and why.startswith("auto: eager")


def test_a_compiled_run_trains_and_records_it(tmp_path, two_class_csv):
    from encoderlab.store.runs import RunStore
    from encoderlab.train.fit import fit
    cfg = tiny_config(two_class_csv, train__compile="on", train__epochs=1, train__max_steps=3)
    run = fit(cfg, RunStore(tmp_path / "runs"), progress=False)
    assert run.status == "completed" and run.info["compiled"] is True
    assert run.info["compile_reason"] == "train.compile = 'on'"
    short = fit(tiny_config(two_class_csv, train__epochs=1, train__max_steps=3), RunStore(tmp_path / "runs"),
                progress=False)
    assert short.info["compiled"] is False and short.info["compile_reason"].startswith("auto: eager")


def test_probe_keeps_the_best_round_so_a_busy_moment_cannot_flip_the_choice(probe_says, monkeypatch):
    speeds = iter([70.0, 20.0,      # round 1: another process held the cores while bf16 ran
                   72.0, 300.0, 71.0, 310.0])

    def fake(dtype_name, shape=machine.PROBE_SHAPE, seconds=0.0):
        return next(speeds)
    monkeypatch.setattr(machine, "_gflops", fake)
    p = machine.probe(refresh=True)
    assert (p["fp32"], p["bf16"]) == (72.0, 310.0)
    assert machine.resolve("auto", "cpu").name == "bf16"


def test_a_probe_on_a_busy_machine_is_used_but_not_cached(probe_says, monkeypatch, tmp_path):
    calls = probe_says(fp32=58.1, bf16=28.6)        # the numbers a load of 15 on 2 cores produced
    monkeypatch.setattr(machine, "_busy", lambda: "load 15.2 on 2 cores")
    p = machine.probe()
    assert p["busy"] == "load 15.2 on 2 cores" and p["cached"] is False
    assert not (tmp_path / "cache" / "machine.json").exists()
    why = machine.resolve("auto", "cpu").reason
    assert "load 15.2 on 2 cores" in why and "not cached" in why
    monkeypatch.setattr(machine, "_busy", lambda: None)      # quiet again: measured and cached
    probe_says(fp32=170.0, bf16=440.0)
    assert machine.probe()["cached"] is False and machine.probe()["cached"] is True
    assert len(calls) == 3 * 2 * machine.PROBE_ROUNDS     # busy: measured each time; quiet: once


def test_busy_reads_the_load_against_the_cores(monkeypatch):
    monkeypatch.setattr(machine, "cores_available", lambda: (2, "2 CPU(s)"))
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (15.2, 9.0, 5.0))
    assert machine._busy() == "load 15.2 on 2 cores"
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (2.4, 1.0, 1.0))
    assert machine._busy() is None


def test_doctor_on_a_busy_machine_decides_from_the_one_measurement_it_shows(probe_says, monkeypatch, tmp_path):
    calls = probe_says(fp32=58.1, bf16=28.6)
    monkeypatch.setattr(machine, "_busy", lambda: "load 15.2 on 2 cores")
    rep = machine.report(tmp_path / "runs")
    assert len(calls) == 2 * machine.PROBE_ROUNDS          # one probe, not a second one for the decision
    assert rep["matmul_gflops"]["busy"] == "load 15.2 on 2 cores" and rep["runs_use"]["precision"] == "fp32"
    assert "28.6" in rep["runs_use"]["precision_reason"] and "58.1" in rep["runs_use"]["precision_reason"]
