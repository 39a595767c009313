#!/usr/bin/env python
"""Which levers speed up encoderlab's training step on this CPU? One process per variant, same batches.

Runs the fit loop's step (autocast forward, loss, backward, clip, fused AdamW step) on real
length-bucketed batches of the quickstart data (builtin:wordnet-lexname, MiniLM-L6, max_length 64,
batch 32) and prints real tokens/s and the share of the measured matmul peak, per variant:

  base       the loop as it is (loss.item() every step for the NaN check)
  eager      attention via the eager kernel instead of SDPA
  compile    torch.compile of the model (dynamic shapes: bucketed batches vary in length)
  budget     token-budget batches (~32 x mean length tokens each) instead of 32 examples

    python bench/step_levers.py                         # native CPU kind, auto precision
    python bench/step_levers.py --cpu-kind avx2         # emulate an AVX2-only CPU
    python bench/step_levers.py --precision fp32 --variants base,compile
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMULATE = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
VARIANTS = ("base", "eager", "compile", "budget")


def child(variant: str, precision: str, steps: int, warmup: int, threads: int) -> dict:
    import numpy as np
    import torch
    from encoderlab import config as C
    from encoderlab import machine
    from encoderlab.data.dataset import load_data
    from encoderlab.encode.text import encode_split, train_batches
    from encoderlab.models import classifier
    from encoderlab.train.loop import autocast
    from encoderlab.train.optim import make_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = C.from_dict(C.ExperimentConfig, {"data": {"max_train": 8000}, "encode": {"max_length": 64},
                                           "train": {"precision": precision, "lr": 1e-4}})
    data, _ = load_data(cfg.data)
    model, tok, _ = classifier.build(cfg.model, len(data.label_names))
    if variant == "eager":
        model.encoder.set_attn_implementation("eager")
    enc = encode_split(tok, data.train, cfg.encode.max_length, cfg.encode.truncation)
    if variant == "budget":
        budget = int(32 * enc.lengths.mean())
        order = train_batches(enc.lengths, 1, 0, True)
        flat = np.concatenate(order)
        flat = flat[np.argsort(enc.lengths[flat], kind="stable")]
        batches, cur = [], []
        for i in flat:
            if cur and (len(cur) + 1) * enc.lengths[cur + [i]].max() > budget:
                batches.append(np.asarray(cur))
                cur = []
            cur.append(i)
        batches.append(np.asarray(cur))
        batches = [batches[j] for j in np.random.default_rng(0).permutation(len(batches))]
    else:
        batches = train_batches(enc.lengths, 32, 0, True)
    opt = make_optimizer(model, cfg.train)
    model.train()
    net = torch.compile(model, dynamic=True) if variant == "compile" else model
    prec = machine.resolve(precision, "cpu")
    dev = torch.device("cpu")
    tokens, t_start, used = 0, None, 0
    for i, idx in enumerate(batches[: warmup + steps]):
        if i == warmup:
            t_start = time.perf_counter()
        batch = enc.batch(idx)
        with autocast(dev, precision):
            out = net(**batch)
        loss = out["loss"].item()
        assert np.isfinite(loss)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens += int(enc.lengths[idx].sum())
            used += 1
    dt = time.perf_counter() - t_start
    body = sum(p.numel() for n, p in model.encoder.named_parameters() if "embeddings" not in n)
    gflops = tokens / dt * 6 * body / 1e9
    p = machine.probe()
    return {"variant": variant, "precision": prec.name, "steps": used, "seconds": dt, "tok_s": tokens / dt,
            "gflops": gflops, "peak": p[prec.name], "util": gflops / p[prec.name],
            "capability": machine.capability()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    ap.add_argument("--cpu-kind", default="native", choices=("native", *EMULATE))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.precision, a.steps, a.warmup, a.threads)))
        return 0
    env = {**os.environ, **EMULATE.get(a.cpu_kind, {}), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO)}
    print(f"cpu kind {a.cpu_kind}, precision {a.precision}, {a.threads} threads, {a.steps} timed steps after "
          f"{a.warmup} warm-up steps (batch 32, max_length 64, MiniLM-L6, wordnet-lexname)")
    print("| variant | precision | real tok/s | GFLOP/s | % of matmul peak |\n|---|---|---:|---:|---:|")
    for v in a.variants.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", v, "--precision", a.precision, "--steps",
                              str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads)],
                             env=env, capture_output=True, text=True)
        if out.returncode:
            print(f"| {v} | failed: {out.stderr.strip().splitlines()[-1][:120]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {v} | {r['precision']} ({r['capability']}) | {r['tok_s']:,.0f} | {r['gflops']:.1f} | "
              f"{100 * r['util']:.0f} (peak {r['peak']:.0f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
