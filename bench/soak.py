"""Soak test of the store and of resume: many kill/resume cycles at random points, and concurrent
sweeps (one of them killed) writing into one store. Prints a summary and, with --out, writes it.

    python bench/soak.py --runs 8 --sweeps 3 --out bench/results/soak.md

Each soak run trains a tiny BERT (2 layers, 16 wide, MiniLM's tokenizer) on 400 real WordNet glosses
of two categories, and is killed with SIGKILL at random fault points (ENCODERLAB_FAULT) — a random
number of times — and resumed with `encoderlab resume` until it completes; its final weights must be
bit-identical to an uninterrupted run's, and `store check` must find nothing at risk after every kill.
Then N sweeps (2 learning rates x 2 seeds each) run at the same time into one store, one of them is
killed mid-way and re-run; every run must be in the index, completed, with its metrics."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoderlab.data import builtin  # noqa: E402
from encoderlab.store.check import check  # noqa: E402
from encoderlab.store.runs import RunStore  # noqa: E402

POINTS = ["step", "checkpoint", "eval", "finish"]
EXP = """name = "{name}"
group = "{group}"
[data]
source = "{folder}/train.csv"
validation = "{folder}/validation.csv"
test = "{folder}/test.csv"
text = "gloss"
label = "category"
[encode]
max_length = 48
[model]
path = "builtin:minilm-l6"
init = "random"
num_layers = 2
hidden_size = 16
num_heads = 2
intermediate_size = 32
[train]
epochs = 3
batch_size = 32
lr = 3e-3
precision = "fp32"
threads = 1
eval_every_steps = 5
"""


def data(folder: Path) -> None:
    import pandas as pd
    keep = {"noun.animal", "noun.artifact"}
    for split, n in (("train", 400), ("validation", 80), ("test", 80)):
        rows = []
        with gzip.open(builtin.get("wordnet-lexname").files[split], "rt", encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                if r["label"] in keep:
                    rows.append(r)
                if len(rows) >= n:
                    break
        pd.DataFrame({"gloss": [r["text"] for r in rows], "category": [r["label"] for r in rows]}) \
            .to_csv(folder / f"{split}.csv", index=False)


def cli(store: Path, *args: str, fault: str = "", wait: bool = True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("ENCODERLAB_FAULT", None)
    if fault:
        env["ENCODERLAB_FAULT"] = fault
    cmd = [sys.executable, "-m", "encoderlab.cli", "--store", str(store), *args, "--quiet"]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def weights(store: Path, run_id: str):
    from safetensors.torch import load_file
    s = RunStore(store)
    try:
        return load_file(str(s.get(run_id).dir / "model" / "model.safetensors"))
    finally:
        s.close()


def at_risk(store: Path) -> list:
    s = RunStore(store)
    try:
        return check(s).corrupt
    finally:
        s.close()


def kill_resume(tmp: Path, runs: int, rng: random.Random) -> dict:
    exp = tmp / "exp.toml"
    exp.write_text(EXP.format(name="soak", group="soak", folder=tmp))
    ref_store = tmp / "reference"
    assert cli(ref_store, "run", str(exp)).returncode == 0
    ref_id = RunStore(ref_store).list()[0]["id"]
    ref = weights(ref_store, ref_id)
    out = {"runs": runs, "kills": 0, "by_point": {p: 0 for p in POINTS}, "identical": 0, "at_risk": 0,
           "not_reached": 0, "seconds": 0.0}
    t0 = time.perf_counter()
    for i in range(runs):
        store = tmp / f"soak-{i}"
        run_id, n_kills = None, rng.randint(1, 4)
        for k in range(n_kills + 1):
            # n counts within one process; a resumed process has less left to do, so n stays small,
            # and `finish` (after which no other point is reached) is drawn least often
            point = rng.choices(POINTS, weights=(4, 3, 3, 1))[0]
            nth = rng.randint(1, {"step": 12, "checkpoint": 3, "eval": 8, "finish": 1}[point])
            fault = f"{point}:{nth}" if k < n_kills else ""
            done = cli(store, "run", str(exp), fault=fault) if run_id is None else \
                cli(store, "resume", run_id, fault=fault)
            if run_id is None:
                run_id = RunStore(store).list()[0]["id"]
            if done.returncode == 0:
                out["not_reached"] += bool(fault)
                break
            assert done.returncode == -9, done.stderr[-2000:]
            out["kills"] += 1
            out["by_point"][point] += 1
            out["at_risk"] += len(at_risk(store))
        if done.returncode != 0:        # the last fault point was never reached: plain resume
            assert cli(store, "resume", run_id).returncode == 0
        w = weights(store, run_id)
        out["identical"] += all((w[k] == ref[k]).all() for k in ref) and w.keys() == ref.keys()
        print(f"  run {i + 1}/{runs}: {n_kills} kill(s) planned, final weights "
              f"{'identical' if out['identical'] == i + 1 else 'DIFFERENT'}", flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def concurrent_sweeps(tmp: Path, n: int) -> dict:
    store = tmp / "shared"
    files = []
    for i in range(n):
        f = tmp / f"sweep-{i}.toml"
        f.write_text(EXP.format(name=f"sweep{i}", group=f"sweep{i}", folder=tmp).replace("epochs = 3", "epochs = 2")
                     + '[sweep]\n"train.lr" = [3e-3, 1e-3]\nseeds = [0, 1]\n')
        files.append(f)
    t0 = time.perf_counter()
    procs = [cli(store, "sweep", str(f), wait=False, fault="step:30" if i == 0 else "") for i, f in enumerate(files)]
    codes = [p.wait() for p in procs]
    rerun = cli(store, "sweep", str(files[0]))
    s = RunStore(store)
    try:
        rows = s.list()
        report = check(s)
        metrics = {r["id"]: len(s.metrics(r["id"])) for r in rows}
    finally:
        s.close()
    return {"sweeps": n, "exit_codes": codes, "rerun_exit": rerun.returncode, "runs_indexed": len(rows),
            "runs_expected": 4 * n, "completed": sum(r["status"] == "completed" for r in rows),
            "runs_without_metrics": sum(v == 0 for v in metrics.values()),
            "findings": [f"{f.kind}: {f.detail}" for f in report.problems],
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=8, help="runs killed and resumed until complete")
    ap.add_argument("--sweeps", type=int, default=3, help="sweeps run at the same time into one store")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the summary (markdown) here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data(tmp)
        print(f"kill/resume: {args.runs} runs", flush=True)
        kr = kill_resume(tmp, args.runs, rng)
        print(f"concurrent sweeps: {args.sweeps}", flush=True)
        cs = concurrent_sweeps(tmp, args.sweeps)
    load = os.getloadavg()
    lines = [
        "# Soak: kill/resume cycles and concurrent sweeps", "",
        f"`python bench/soak.py --runs {args.runs} --sweeps {args.sweeps} --seed {args.seed}` "
        f"(load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})", "",
        "| kill/resume | value |", "|---|---|",
        f"| runs | {kr['runs']} |", f"| SIGKILLs | {kr['kills']} ("
        + ", ".join(f"{p} {c}" for p, c in kr["by_point"].items()) + ") |",
        f"| planned faults not reached (the run completed first) | {kr['not_reached']} |",
        f"| final weights bit-identical to the uninterrupted run | {kr['identical']} of {kr['runs']} |",
        f"| store check findings with data at risk, after every kill | {kr['at_risk']} |",
        f"| wall time | {kr['seconds']:.0f} s |", "",
        "| concurrent sweeps | value |", "|---|---|",
        f"| sweeps at once into one store (one killed at its 30th step, then re-run) | {cs['sweeps']} "
        f"(exit codes {cs['exit_codes']}, re-run {cs['rerun_exit']}) |",
        f"| runs in the index / expected | {cs['runs_indexed']} / {cs['runs_expected']} |",
        f"| completed | {cs['completed']} |", f"| runs without indexed metrics | {cs['runs_without_metrics']} |",
        f"| open store check findings | {len(cs['findings'])} {cs['findings'] or ''} |",
        f"| wall time | {cs['seconds']:.0f} s |"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    ok = kr["identical"] == kr["runs"] and not kr["at_risk"] and cs["runs_indexed"] == cs["runs_expected"] \
        and cs["completed"] == cs["runs_expected"] and not cs["findings"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
