"""Many writers, one store: 8 processes log runs into one fresh store at once; no row is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from encoderlab.store.runs import RunStore

# one short "run" as a Ray worker writes it: create, 100 metric events, updates, completion
WRITER = """
import sys, time
from encoderlab import config as C
from encoderlab.store.runs import RunStore, now
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))     # all start together, on a fresh store
store = RunStore(sys.argv[1])
cfg = C.from_dict(C.ExperimentConfig, {"name": "w" + sys.argv[2], "group": "many", "train": {"seed": int(sys.argv[2])}})
run = store.create(cfg, ["a", "b"])
for step in range(1, 101):
    run.log({"split": "train", "step": step, "epoch": step / 100, "metrics": {"loss": 1 / step, "accuracy": 0.5}})
    if step % 10 == 0:
        run.update(steps_done=step)
run.update(status="completed", finished=now(), test_accuracy=0.5)
"""


def test_eight_concurrent_writers_lose_no_row(tmp_path):
    root = tmp_path / "runs"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(i), start], env=env, stderr=subprocess.PIPE,
                              text=True) for i in range(8)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
    store = RunStore(root)
    rows = store.list(group="many")
    assert len(rows) == 8 == len(store.ids())                 # index rows == run folders
    assert {r["status"] for r in rows} == {"completed"} and {r["steps_done"] for r in rows} == {100}
    for r in rows:
        assert len(store.metrics(r["id"])) == 200             # 100 events x 2 metrics, none lost
        assert len(store.get(r["id"]).events()) == 100
    store.close()
