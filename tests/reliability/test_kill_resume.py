"""Kill anywhere, resume exactly: a real training process is killed (SIGKILL: no handler, no cleanup)
or stopped (SIGTERM / SIGINT: graceful) at named points, resumed with `encoderlab resume`, and must end
with the same test metrics and bit-identical final weights as a run that was never interrupted; the
store must show no corrupt checkpoint or index entry at any moment in between."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import TINY_MODEL_TOML, two_class_data_toml
from encoderlab.store.check import check
from encoderlab.store.runs import RunStore

ROOT = Path(__file__).resolve().parents[2]


def _exp(folder: Path, tmp: Path) -> Path:
    exp = tmp / "exp.toml"
    exp.write_text(f"""name = "kill"
[data]
{two_class_data_toml(folder)}
[encode]
max_length = 48
[model]
{TINY_MODEL_TOML}
[train]
epochs = 2
batch_size = 32
lr = 3e-3
precision = "fp32"
threads = 1
eval_every_steps = 5
keep_checkpoints = 2
""")
    return exp


def _cli(store: Path, *args: str, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("ENCODERLAB_FAULT", None)
    if fault:
        env["ENCODERLAB_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "encoderlab.cli", "--store", str(store), *args, "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300)


def _result(store: Path) -> tuple[dict, dict]:
    s = RunStore(store)
    try:
        (row,) = s.list()
        run = s.get(row["id"])
        assert run.status == "completed" and row["status"] == "completed"
        test = [e for e in run.events() if e["split"] == "test"][-1]["metrics"]
        weights = load_file(str(run.dir / "model" / "model.safetensors"))
        return test, weights
    finally:
        s.close()


@pytest.fixture(scope="module")
def reference(two_class_csv, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    exp = _exp(two_class_csv, tmp)
    done = _cli(tmp / "runs", "run", str(exp))
    assert done.returncode == 0, done.stderr
    return exp, _result(tmp / "runs")


# 26 optimizer steps (400 examples / 32, 2 epochs); a checkpoint after every evaluation (steps 5,
# 10, 13, 18, 23, 26); 3 evaluation batches each (80 validation examples / 32)
POINTS = {
    "step": ("step:9", -signal.SIGKILL),                # mid-step, between backward and optimizer step
    "checkpoint": ("checkpoint:2", -signal.SIGKILL),    # weights of step 10 written, the rest not
    "eval": ("eval:5", -signal.SIGKILL),                # inside the second evaluation
    "finish": ("finish:1", -signal.SIGKILL),            # training done, final model not yet written
    "sigterm": ("step:16:TERM", 130),                   # graceful: checkpoint at the step boundary
    "sigint": ("step:3:INT", 130),                      # Ctrl-C before the first checkpoint
}


@pytest.mark.parametrize("where", list(POINTS))
def test_killed_run_resumes_to_the_identical_result(where, reference, tmp_path):
    exp, (ref_test, ref_weights) = reference
    fault, code = POINTS[where]
    store = tmp_path / "runs"
    killed = _cli(store, "run", str(exp), fault=fault)
    assert killed.returncode == code, killed.stderr[-2000:]
    s = RunStore(store)
    (row,) = s.list()
    run = s.get(row["id"])
    assert run.status == "interrupted"                   # a dead pid reads as interrupted
    report = check(s)
    assert not report.corrupt, report.corrupt            # a half-written checkpoint is a temp folder
    for ckpt in run.checkpoints:                         # every listed checkpoint loads
        load_file(str(ckpt / "model.safetensors"))
        json.loads((ckpt / "state.json").read_text())
    if code == 130:     # graceful: the step under way finishes and is checkpointed
        assert "continue with: encoderlab resume" in killed.stderr
        assert int(run.checkpoints[-1].name.split("-")[1]) == int(fault.split(":")[1])
        assert run.info["message"].startswith("stopped at step")
    s.close()
    resumed = _cli(store, "resume", row["id"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    test, weights = _result(store)
    assert test == ref_test
    assert weights.keys() == ref_weights.keys()
    assert all((weights[k] == ref_weights[k]).all() for k in weights)
    s = RunStore(store)
    assert not check(s).problems
    s.close()
