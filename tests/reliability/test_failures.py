"""What survives which failure: a full disk while checkpointing, a loss that turns NaN, a hostile
checkpoint file, a run name that tries to leave the store; and what `store check` makes of the
leftovers."""

from __future__ import annotations

import errno
import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from encoderlab.cli import main
from encoderlab.errors import EncoderlabError, StoreError
from encoderlab.store import check as K
from encoderlab.train import checkpoint
from encoderlab.train.fit import fit


def _whole(ckpt) -> None:
    load_file(str(ckpt / "model.safetensors"))
    assert json.loads((ckpt / "state.json").read_text())["step"] == int(ckpt.name.split("-")[1])


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(two_class_csv, store, monkeypatch):
    real = checkpoint.save_model
    calls = {"n": 0}

    def full_disk(model, path):
        calls["n"] += 1
        if calls["n"] == 3:          # the third checkpoint: half a file, then ENOSPC
            open(path, "wb").write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(model, path)

    monkeypatch.setattr(checkpoint, "save_model", full_disk)
    cfg = tiny_config(two_class_csv, name="diskfull", **{"train.eval_every_steps": 5})
    with pytest.raises(StoreError, match="No space left on device"):
        fit(cfg, store, progress=False)
    run = store.get("last")
    assert run.status == "failed" and "previous checkpoints are intact" in run.info["message"]
    assert [c.name for c in run.checkpoints] == ["step-5", "step-10"]
    for c in run.checkpoints:
        _whole(c)
    assert not list((run.dir / "checkpoints").glob(".*"))      # the half-written temp folder is gone
    assert not K.check(store).problems
    monkeypatch.setattr(checkpoint, "save_model", real)         # space freed: resume finishes the run
    assert main(["--store", str(store.root), "resume", run.id, "--quiet"]) == 0
    assert store.get(run.id).status == "completed"


def test_nan_loss_stops_with_a_diagnostic_and_keeps_the_good_checkpoints(two_class_csv, store, monkeypatch):
    real = torch.nn.functional.cross_entropy
    seen = {"n": 0}

    def nan_after_7(*a, **kw):       # training losses from the 8th step on are NaN
        out = real(*a, **kw)
        if a[0].requires_grad:       # a training step's loss, not a validation score
            seen["n"] += 1
            if seen["n"] >= 8:
                return out * float("nan")
        return out

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_after_7)
    cfg = tiny_config(two_class_csv, name="nan", **{"train.eval_every_steps": 3})
    with pytest.raises(EncoderlabError, match="became nan at step 8"):
        fit(cfg, store, progress=False)
    run = store.get("last")
    assert run.status == "failed" and "lower train.lr" in run.info["message"]
    assert [c.name for c in run.checkpoints] == ["step-3", "step-6"]   # nothing after the NaN
    for c in run.checkpoints:
        _whole(c)
        assert all(torch.isfinite(t).all() for t in load_file(str(c / "model.safetensors")).values())


class _Evil:
    def __reduce__(self):
        import os
        return os.system, ("touch PWNED",)


def test_a_pickle_that_runs_code_is_refused(two_class_csv, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = fit(tiny_config(two_class_csv, name="victim", **{"train.epochs": 1, "train.keep_final_checkpoints": True,
                                                           "train.keep_optimizer": True}), store, progress=False)
    ckpt = run.checkpoints[-1]
    (ckpt / "trainer.pt").write_bytes(pickle.dumps({"optimizer": _Evil()}))
    with pytest.raises(StoreError, match="refused to load"):
        checkpoint.load(ckpt, *_loadable(run))
    assert not (tmp_path / "PWNED").exists()


def _loadable(run):
    """A model/optimizer/scheduler the checkpoint's weights fit."""
    from encoderlab.train.fit import setup
    from encoderlab.train.optim import make_optimizer, make_scheduler
    s = setup(run.config())
    opt = make_optimizer(s.model, run.config().train)
    return s.model, opt, make_scheduler(opt, run.config().train, 10)


def test_run_names_cannot_leave_the_store(two_class_csv, store):
    run = fit(tiny_config(two_class_csv, name="../../../etc/evil", **{"train.epochs": 1}), store,
              progress=False)
    assert run.dir.parent == store.root.resolve() or run.dir.parent == store.root
    assert ".." not in run.id and "/" not in run.id


def test_store_check_reports_and_fixes_leftovers(two_class_csv, store):
    run = fit(tiny_config(two_class_csv, name="ok", **{"train.epochs": 1, "train.keep_final_checkpoints": True}), store,
              progress=False)
    assert not K.check(store).findings
    # what crashes leave behind: a temp file of a dead writer, a torn metrics line, a missing row
    (run.dir / ".run.json.tmp-999999").write_text("{")
    with open(run.dir / "metrics.jsonl", "a") as fh:
        fh.write('{"split": "train", "ste')
    (store.root / "20990101-000000-gone-0000").mkdir()
    store.con.execute("DELETE FROM runs WHERE id = ?", (run.id,))
    ckpt = run.checkpoints[-1]
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    kinds = sorted(f.kind for f in K.check(store).findings)
    assert kinds == ["corrupt_checkpoint", "partial", "temp", "torn_metrics", "unindexed"]
    with pytest.raises(SystemExit) as stop:                         # open problems: exit status 1
        main(["--store", str(store.root), "store", "check"])
    assert stop.value.code == 1
    report = K.fix(store, K.check(store))
    assert sorted(f.kind for f in report.fixed) == ["temp", "torn_metrics", "unindexed"]
    left = K.check(store)
    assert sorted(f.kind for f in left.problems) == ["corrupt_checkpoint", "partial"]   # never auto-deleted
    assert [r["id"] for r in store.list()] == [run.id]


def test_resume_of_a_run_that_restarts_instead_is_a_clear_error(two_class_csv, store, capsys):
    for fields in ({"task": "ranking"}, {"task": "single", "parent": "20261124-000000-teacher-0000"}):
        run = store.create(tiny_config(two_class_csv, name="restarts"), [], **fields)
        run.update(status="interrupted")
        assert main(["--store", str(store.root), "resume", run.id]) == 2
        assert "restart rather than resume" in capsys.readouterr().err
