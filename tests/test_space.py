"""Lean run folders: a completed run keeps its final model, metrics and predictions; checkpoints
(with their optimizer state) stay only while a run can resume; `store du` / `store gc`."""

from __future__ import annotations

import json

import pytest

from encoderlab import cli
from encoderlab.store import space
from encoderlab.train.fit import fit

from conftest import tiny_config


class _StopAtFirstEval(Exception):
    pass


def _interrupted(two_class_csv, store):
    """A run stopped after its first evaluation (checkpoints with optimizer state on disk)."""
    cfg = tiny_config(two_class_csv, name="cut", train__epochs=2, train__save_every_steps=5)

    def stop(ev):
        if ev["split"] == "validation":
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, store, callback=stop, progress=False)
    run = store.get("cut")
    assert run.status == "interrupted"
    return run


def test_completed_run_keeps_model_metrics_predictions_only(two_class_csv, store):
    run = fit(tiny_config(two_class_csv, train__epochs=2), store, progress=False)
    assert run.status == "completed"
    assert not (run.dir / "checkpoints").exists()
    assert (run.dir / "model" / "model.safetensors").is_file()
    assert {p.name for p in (run.dir / "predictions").iterdir()} == {"validation.csv", "test.csv"}
    assert (run.dir / "metrics.jsonl").stat().st_size > 0
    timing = run.info["timing"]
    assert timing["train"] > 0 and timing["eval"] > 0 and timing["finish"] > 0
    assert timing["wall"] >= timing["train"] + timing["eval"]


def test_keep_flags_keep_what_they_name(two_class_csv, store):
    run = fit(tiny_config(two_class_csv, train__epochs=2, train__keep_final_checkpoints=True), store,
              progress=False)
    assert run.checkpoints and not list((run.dir / "checkpoints").glob("step-*/trainer.pt"))
    run = fit(tiny_config(two_class_csv, train__epochs=2, train__keep_final_checkpoints=True,
                          train__keep_optimizer=True), store, progress=False)
    assert run.checkpoints and all((c / "trainer.pt").is_file() for c in run.checkpoints)


def test_interrupted_run_keeps_its_checkpoints_and_resumes_after_gc(two_class_csv, store):
    cut = _interrupted(two_class_csv, store)
    before = {p.name for p in cut.checkpoints}
    assert before and all((c / "trainer.pt").is_file() for c in cut.checkpoints)
    # an old-style completed run: checkpoints with optimizer state, config without the keep flags
    done = fit(tiny_config(two_class_csv, name="old", train__epochs=2, train__keep_final_checkpoints=True,
                           train__keep_optimizer=True), store, progress=False)
    cfg_file = done.dir / "config.toml"
    cfg_file.write_text("\n".join(line for line in cfg_file.read_text().splitlines()
                                  if not line.startswith("keep_")) + "\n")
    held = space.du(done.dir / "checkpoints")
    assert held > 0

    dry = space.gc(store)
    assert [u.run for u in dry] == [done.id] and dry[0].reclaimable == held
    assert (done.dir / "checkpoints").exists()                 # a dry run deletes nothing

    applied = space.gc(store, apply=True)
    assert [u.run for u in applied] == [done.id]
    assert not (done.dir / "checkpoints").exists()
    assert (done.dir / "model" / "model.safetensors").is_file()
    assert {p.name for p in cut.checkpoints} == before          # the interrupted run is untouched
    assert space.gc(store) == []                                # nothing left to reclaim

    resumed = fit(None, store, resume=cut, progress=False)
    assert resumed.status == "completed" and resumed.info["test_accuracy"] is not None


def test_store_du_and_gc_cli(two_class_csv, store, capsys):
    run = fit(tiny_config(two_class_csv, name="kept", train__epochs=1, train__keep_final_checkpoints=True,
                          train__keep_optimizer=True), store, progress=False)
    cfg_file = run.dir / "config.toml"
    cfg_file.write_text(cfg_file.read_text().replace("keep_optimizer = true", "keep_optimizer = false"))
    base = ["--store", str(store.root)]
    cli.main(base + ["store", "du", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == [run.id]
    optimizer = sum(p.stat().st_size for p in (run.dir / "checkpoints").glob("step-*/trainer.pt"))
    assert rows[0]["reclaim_mb"] == round(optimizer / 1e6, 1) and rows[0]["size_mb"] > rows[0]["reclaim_mb"]
    cli.main(base + ["store", "du", "--by", "group"])
    assert "1 runs" in capsys.readouterr().out
    cli.main(base + ["store", "gc"])
    out = capsys.readouterr().out
    assert "dry run: 1 completed run(s): would free" in out and "optimizer state" in out
    assert list((run.dir / "checkpoints").glob("step-*/trainer.pt"))
    cli.main(base + ["store", "gc", "--apply"])
    assert "freed" in capsys.readouterr().out
    assert not list((run.dir / "checkpoints").glob("step-*/trainer.pt"))
    assert run.checkpoints                                       # weights kept: the run asked for them
    # the store check accepts checkpoints of a completed run without optimizer state
    cli.main(base + ["store", "check"])
    assert "0 findings" in capsys.readouterr().out


def test_best_validation_is_not_scored_twice(two_class_csv, store, monkeypatch):
    from encoderlab.train import fit as F
    calls = []
    real = F.evaluate

    def counting(model, enc, *a, **k):
        calls.append(len(enc))
        return real(model, enc, *a, **k)
    monkeypatch.setattr(F, "evaluate", counting)
    run = fit(tiny_config(two_class_csv, train__epochs=2, train__lr=3e-3), store, progress=False)
    n_val, n_test = run.info["data"]["sizes"]["validation"], run.info["data"]["sizes"]["test"]
    assert calls.count(n_test) == 1 if n_val != n_test else len(calls) == 3
    assert len(calls) == 3           # two epochs' validation + the test pass; no re-scoring
    final = [e for e in run.events() if e["split"] == "final_validation"][0]
    best = [e for e in run.events() if e["split"] == "validation" and e["step"] == final["step"]][0]
    assert final["metrics"] == best["metrics"]
