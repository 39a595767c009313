#!/usr/bin/env python
"""Compression trade-off on builtin:wordnet-lexname: a fine-tuned MiniLM-L6 teacher, distilled
students that keep some of its layers, each served as PyTorch fp32 / int8 (torchao, and the
deprecated quantize_dynamic as torch-int8-legacy) and ONNX Runtime fp32 / int8; one interleaved
latency benchmark; the trade-off table (accuracy on the test split, latency p50, throughput, size,
% change vs the teacher served PyTorch eager fp32).

Every step reuses a completed run of the same name in the store, so a rerun only benchmarks:

    python bench/compression.py                                   # teacher + students first:2, every:2
    python bench/compression.py --students first:2 --distill-epochs 8 --rounds 7 --out table.md

The same through the CLI (what this script calls):
    encoderlab quickstart name=teacher data.max_train=0 train.threads=1
    encoderlab distill teacher name=distill-L2 compress.layers=first:2 train.epochs=8 train.lr=1.5e-4 \\
        compress.soft_weight=0.8 train.threads=1
    encoderlab export distill-L2 --int8
    encoderlab quantize distill-L2 --legacy
    encoderlab bench teacher teacher@torch-int8 distill-L2 distill-L2@torch-int8 distill-L2@torch-int8-legacy \\
        distill-L2-onnx-int8
    encoderlab tradeoff teacher --format markdown
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def completed(store, name: str):
    runs = [r for r in store.list(name=name) if r["name"] == name and r["status"] == "completed"]
    return store.get(runs[-1]["id"]) if runs else None


def quantized(store, parent, name: str, runtime: str):
    """The completed int8 run of that name and quantizer, else a new one. A `torch-int8` run without a
    `quantizer` field predates torchao (it was scored with quantize_dynamic) and is not reused."""
    from encoderlab.cost.derive import quantize_run
    from encoderlab.cost.runtime import quantizer_of
    run = completed(store, name)
    if run is not None and run.info.get("quantizer", "").split(" ")[0] == quantizer_of(runtime).split(" ")[0]:
        return run
    return quantize_run(store, parent, name, runtime=runtime)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=os.environ.get("ENCODERLAB_STORE", "runs"))
    ap.add_argument("--teacher", default="teacher", help="name of the teacher run (trained when missing)")
    ap.add_argument("--students", default="first:2,every:2", help="compress.layers of each student")
    ap.add_argument("--names", help="run names of the students, comma-separated like --students "
                    "(default distill-<spec>); an existing completed run of that name is reused")
    ap.add_argument("--distill-epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1.5e-4)
    ap.add_argument("--soft-weight", type=float, default=0.8)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1, help="training and benchmark threads")
    ap.add_argument("--batch-size", type=int, default=32, help="inference batch size")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", help="also write the Markdown table here")
    args = ap.parse_args(argv)

    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()       # "Loading weights" bars per model load are noise here
    from encoderlab import config as C
    from encoderlab.analysis import render as R
    from encoderlab.analysis import tradeoff as TO
    from encoderlab.cli import QUICKSTART
    from encoderlab.cost.bench import bench_targets
    from encoderlab.cost.derive import export_run
    from encoderlab.store.runs import RunStore
    from encoderlab.train.distill import distill, student_config
    from encoderlab.train.fit import fit

    store = RunStore(args.store)
    teacher = completed(store, args.teacher)
    if teacher is None:
        print(f"training the teacher '{args.teacher}' (MiniLM-L6, all 20k training glosses, 3 epochs)", flush=True)
        teacher = fit(C.load(QUICKSTART, [f'name="{args.teacher}"', "data.max_train=0",
                                          f"train.threads={args.threads}"]), store)
    print(f"teacher {teacher.id}: test accuracy {teacher.info['test_accuracy']:.4f}")

    equivalence = []
    t_int8 = quantized(store, teacher, f"{args.teacher}-int8", "torch-int8")
    t_legacy = quantized(store, teacher, f"{args.teacher}-int8-legacy", "torch-int8-legacy")
    t_onnx8 = completed(store, f"{args.teacher}-onnx-int8") or export_run(store, teacher, int8=True,
                                                                         name=f"{args.teacher}-onnx-int8")[0]
    equivalence.append({"run": t_onnx8.info["name"], **t_onnx8.info["export"]})
    targets = [f"{teacher.id}@torch", t_int8.id, t_legacy.id, t_onnx8.id]
    specs = args.students.split(",")
    names = args.names.split(",") if args.names else [f"distill-{s.replace(':', '')}" for s in specs]
    if len(names) != len(specs):
        ap.error("--names needs one name per --students entry")
    for spec, name in zip(specs, names):
        student = completed(store, name)
        if student is None:
            print(f"distilling {name} (compress.layers = {spec})", flush=True)
            student = distill(student_config(teacher, None, [
                f'name="{name}"', f'compress.layers="{spec}"', f"train.epochs={args.distill_epochs}",
                f"train.lr={args.lr}", f"compress.soft_weight={args.soft_weight}",
                f"compress.temperature={args.temperature}", f"train.threads={args.threads}"]), store)
        print(f"{name} {student.id}: validation {student.info['best_value']:.4f}, "
              f"test accuracy {student.info['test_accuracy']:.4f}")
        int8 = quantized(store, student, f"{name}-int8", "torch-int8")
        legacy = quantized(store, student, f"{name}-int8-legacy", "torch-int8-legacy")
        onnx = completed(store, f"{name}-onnx") or export_run(store, student, name=f"{name}-onnx")[0]
        onnx8 = completed(store, f"{name}-onnx-int8") or export_run(store, student, int8=True,
                                                                    name=f"{name}-onnx-int8")[0]
        for r in (onnx, onnx8):
            equivalence.append({"run": r.info["name"], **r.info["export"]})
        targets += [f"{student.id}@torch", int8.id, legacy.id, onnx.id, onnx8.id]

    print(f"benchmarking {len(targets)} targets interleaved ({args.rounds} rounds x {args.batches} batches of "
          f"{args.batch_size}, {args.threads} thread(s)); load average now {os.getloadavg()}", flush=True)
    bench_targets(store, targets, batch_sizes=(args.batch_size,), n_batches=args.batches, rounds=args.rounds,
                  threads=args.threads)
    family = [store.get(r["id"]) for r in store.list()]   # the table keeps the runs of this session
    rows, meta = TO.table(family)
    md = [TO.caption(meta), "", R.render(rows, TO.COLUMNS, "markdown").strip(), "",
          "ONNX vs PyTorch fp32 of the same weights (test split):", "",
          R.render(equivalence, [("run", "run"), ("opset", "opset"), ("max_abs_logit_diff", "max |Δ logit|", "g"),
                                 ("label_agreement", "label agreement", 4), ("examples", "examples")],
                   "markdown").strip()]
    text = "\n".join(md) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
