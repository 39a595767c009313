"""Data-parallel training (torch.distributed, gloo): 2 processes match 1 with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import tiny_experiment, two_class_data_toml
from encoderlab.store.runs import RunStore
from encoderlab.train.distributed import World
from encoderlab.train.fit import fit
from encoderlab import config as C


def test_slices_of_a_global_batch_cover_it_once_and_no_rank_is_left_empty():
    idx = np.arange(10, 17)                                  # 7 examples over 3 ranks
    parts = [World(r, 3).part(idx) for r in range(3)]
    assert sorted(np.concatenate([p for p, n in parts]).tolist()) == idx.tolist()
    assert [n for _, n in parts] == [3, 2, 2]
    mine, n = World(2, 3).part(np.array([5]))              # a last batch smaller than the world
    assert n == 0 and mine.tolist() == [5]                  # one example, weight 0


def test_two_processes_match_one(two_class_csv, tmp_path):
    exp = tiny_experiment(tmp_path / "exp.toml", "ddp",
                          two_class_data_toml(two_class_csv) + "\nmax_train = 150\nmax_eval = 60",
                          encode={"max_length": 32}, model="dropout = 0.0\nhead = { dropout = 0.0 }",
                          train={"epochs": 2})
    store = tmp_path / "runs"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "encoderlab.cli", "--store", str(store), "run", str(exp),
                           "--nproc", "2", "--quiet", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = RunStore(store).list()
    assert len(rows) == 1 and rows[0]["status"] == "completed"       # rank 1 wrote nothing
    two = RunStore(store).get(rows[0]["id"])
    assert two.info["processes"] == 2
    assert json.loads(done.stdout)["final"]["test"]["accuracy"] == rows[0]["test_accuracy"]

    one = fit(C.load(exp), RunStore(tmp_path / "single"), progress=False)
    # 150 examples / 16 = 10 batches per epoch, the last of 6: slices of 8+8 ... 3+3
    events = {e["split"]: e for e in two.events()}, {e["split"]: e for e in one.events()}
    for split in ("train", "validation", "test"):
        a, b = events[0][split]["metrics"], events[1][split]["metrics"]
        for k in ("loss", "accuracy"):
            assert a[k] == pytest.approx(b[k], abs=1e-4), (split, k)
    # the summed gradients of two slices differ from one batch's by float rounding only
    wa, wb = load_file(two.dir / "model" / "model.safetensors"), load_file(one.dir / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"largest weight difference, 2 processes vs 1: {diff:.2e}")
    assert diff < 1e-4
    assert two.info["test_accuracy"] == one.info["test_accuracy"]
