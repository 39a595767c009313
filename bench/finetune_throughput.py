#!/usr/bin/env python
"""Fine-tuning throughput: Hugging Face Trainer (two ways) vs encoderlab, same model/data/hyperparameters.

  (a) hf-glue  HF Trainer as transformers' run_glue example runs by default: every example padded to
               max_length, fp32, default_data_collator, AutoModelForSequenceClassification.
  (b) hf-best  HF Trainer at its best on CPU: dynamic padding (DataCollatorWithPadding), length-grouped
               sampling, bf16 autocast where this machine runs bf16 faster (measured), else fp32.
  (c) encoderlab  encoderlab.train.fit.fit(cfg, RunStore(tmp)) with precision=auto, bucket=true,
               head.pooling=cls. Its per-epoch validation pass and checkpoint cannot be switched off and
               are counted in its training wall time (they are part of its normal cost).

Each variant runs in its own child process (a subprocess of this script, `--child VARIANT`), so peak RSS
is per variant. All three read the same examples (encoderlab's `load_data` output) and use the same
batch size, epochs, lr, warmup steps, weight decay, linear schedule, grad clipping, seed and max_length.

Real tokens are counted the same way for all three: the non-pad token count of every training example
(tokenized with truncation at max_length) x epochs. Real tokens/s = that / training wall time.

    python bench/finetune_throughput.py                       # defaults: 3000 examples, 2 epochs
    python bench/finetune_throughput.py --variants b,c --epochs 1 --json out.json
    python bench/finetune_throughput.py --cpu-kind avx2      # emulate an AVX2-only CPU on a newer one
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VARIANTS = {"a": "hf-glue (pad 128, fp32)", "b": "hf-best (dynamic, grouped, best precision)",
            "c": "encoderlab (auto precision, bucket)", "d": "encoderlab + torch.compile"}
# what an AVX2-only CPU runs, on a newer CPU: torch's kernels and oneDNN's ISA capped at AVX2 (checked:
# bf16 matmul falls from ~300 to ~2-8 GFLOP/s, as on a real AVX2 machine)
EMULATE = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


# ---------------------------------------------------------------------------------------------
# child side: one variant per process


def _peak_rss_mb() -> float:
    """Peak resident set of this process in MB (VmHWM: per address space, so not inflated by the
    parent's pages at fork time)."""
    from encoderlab.cost.bench import peak_rss_mb
    return peak_rss_mb()


def _common(spec: dict):
    """Pin threads, load the shared examples, count real tokens. Returns (torch, data, tokenizer, info)."""
    import torch
    torch.set_num_threads(spec["threads"])
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    from encoderlab.config import DataConfig
    from encoderlab.data.dataset import load_data
    from encoderlab.models import registry

    folder = registry.resolve(spec["model"])
    data, _ = load_data(DataConfig(source=spec["data"], max_train=spec["max_train"],
                                   split_seed=spec["split_seed"]))
    tok = AutoTokenizer.from_pretrained(folder)
    lengths = [len(x) for x in tok(data.train.texts, truncation=True, max_length=spec["max_length"])["input_ids"]]
    info = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "n_train": len(data.train), "n_validation": len(data.validation),
            "num_labels": len(data.label_names), "real_tokens_per_epoch": int(sum(lengths)),
            "model_folder": str(folder)}
    print(f"[{spec['variant']}] torch threads = {info['torch_threads']}, train = {info['n_train']}, "
          f"validation = {info['n_validation']}, labels = {info['num_labels']}, "
          f"real tokens/epoch = {info['real_tokens_per_epoch']}", flush=True)
    return torch, data, folder, info


class _CountingCollator:
    """Wraps a collator; counts the padded and real token slots of training batches."""

    def __init__(self, inner):
        self.inner, self.active = inner, True
        self.padded = self.real = self.batches = 0

    def __call__(self, features):
        batch = self.inner(features)
        if self.active:
            self.padded += batch["input_ids"].numel()
            self.real += int(batch["attention_mask"].sum())
            self.batches += 1
        return batch


def _training_args(spec: dict, out_dir: str, best: bool):
    """TrainingArguments for this transformers version (v5 renamed group_by_length, no_cuda, ...)."""
    import inspect
    from transformers import TrainingArguments
    params = inspect.signature(TrainingArguments.__init__).parameters
    kw = dict(output_dir=out_dir, per_device_train_batch_size=spec["batch_size"],
              per_device_eval_batch_size=spec["eval_batch_size"], num_train_epochs=spec["epochs"],
              learning_rate=spec["lr"], lr_scheduler_type="linear", warmup_steps=spec["warmup_steps"],
              weight_decay=spec["weight_decay"], max_grad_norm=spec["max_grad_norm"], seed=spec["seed"],
              save_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="no",
              dataloader_num_workers=0, bf16=best and spec["precision"] == "bf16")
    kw["eval_strategy" if "eval_strategy" in params else "evaluation_strategy"] = "no"
    if "use_cpu" in params:
        kw["use_cpu"] = True
    else:
        kw["no_cuda"] = True
    if best:
        if "train_sampling_strategy" in params:          # transformers >= 5
            kw["train_sampling_strategy"] = "group_by_length"
        else:
            kw["group_by_length"] = True
    return TrainingArguments(**kw)


def run_hf(spec: dict, best: bool) -> dict:
    torch, data, folder, info = _common(spec)
    import numpy as np
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, default_data_collator, set_seed)

    t_e2e = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder)
    padding = False if best else "max_length"

    def dataset(split):
        enc = tok(split.texts, padding=padding, max_length=spec["max_length"], truncation=True)
        keys = list(enc.keys())
        return [{**{k: enc[k][i] for k in keys}, "labels": int(split.labels[i])} for i in range(len(split))]

    train_ds, val_ds = dataset(data.train), dataset(data.validation)
    names = data.label_names
    set_seed(spec["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)})
    collator = _CountingCollator(DataCollatorWithPadding(tok) if best else default_data_collator)
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as out_dir:
        args = _training_args(spec, out_dir, best)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator,
                          processing_class=tok)
        t0 = time.perf_counter()
        out = trainer.train()
        train_wall = time.perf_counter() - t0
        collator.active = False
        pred = trainer.predict(val_ds)
    # Score against pred.label_ids, not data.validation.labels: with train_sampling_strategy=
    # "group_by_length", transformers 5 also length-groups (shuffles) the *evaluation* sampler, so
    # predictions do not come back in dataset order.
    label_ids = np.asarray(pred.label_ids)
    assert sorted(label_ids.tolist()) == sorted(data.validation.labels.tolist())
    acc = float((np.asarray(pred.predictions).argmax(-1) == label_ids).mean())
    e2e = time.perf_counter() - t_e2e
    return {**info, "train_wall": train_wall, "e2e_wall": e2e, "padded_tokens": collator.padded,
            "counted_real_tokens": collator.real, "train_batches": collator.batches,
            "steps": int(out.global_step), "hf_train_runtime": out.metrics.get("train_runtime"),
            "val_accuracy": acc, "train_loss": out.metrics.get("train_loss"),
            "optimizer": type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                              else trainer.optimizer).__name__}


def run_encoderlab(spec: dict) -> dict:
    torch, data, folder, info = _common(spec)
    from encoderlab import config as C
    from encoderlab.store.runs import RunStore
    from encoderlab.train import checkpoint as CK
    from encoderlab.encode import text as T
    from encoderlab.train import fit as F

    # Instrumentation only (this process, nothing in the package changes): count training batch slots,
    # time the in-training validation passes and checkpoints.
    clock = {"evals": [], "ckpt": 0.0, "last_ckpt_end": None, "finishing": False,
             "in_eval": False, "padded": 0, "real": 0, "batches": 0}
    from encoderlab.train import loop as L
    orig_collate, orig_predict = T.collate, L.predict_logits
    orig_save, orig_prune = CK.save, CK.prune

    def collate(enc, idx, pad_id):
        batch = orig_collate(enc, idx, pad_id)
        if not clock["in_eval"]:
            clock["padded"] += batch["input_ids"].numel()
            clock["real"] += int(batch["attention_mask"].sum())
            clock["batches"] += 1
        return batch

    def predict_logits(*a, **k):
        t = time.perf_counter()
        clock["in_eval"] = True
        try:
            return orig_predict(*a, **k)
        finally:
            clock["in_eval"] = False
            if not clock["finishing"]:
                clock["evals"].append(time.perf_counter() - t)

    def timed(fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                now = time.perf_counter()
                if not clock["finishing"]:
                    clock["ckpt"] += now - t
                    clock["last_ckpt_end"] = now
        return wrapper

    orig_finish = F._finish

    def finish(*a, **k):         # the end-of-run scoring: not part of the training window
        clock["finishing"] = True
        return orig_finish(*a, **k)

    # Encoded.batch looks collate up in encode.text at call time, so patching the module counts every batch
    T.collate, L.predict_logits = collate, predict_logits
    CK.save, CK.prune, F._finish = timed(orig_save), timed(orig_prune), finish

    events = []

    def callback(ev):
        events.append({**ev, "_t": time.perf_counter()})

    cfg = C.from_dict(C.ExperimentConfig, {
        "name": "bench-finetune-throughput",
        "data": {"source": spec["data"], "max_train": spec["max_train"], "split_seed": spec["split_seed"]},
        "encode": {"max_length": spec["max_length"]},
        "model": {"path": spec["model"], "head": {"type": "linear", "pooling": "cls", "dropout": 0.1}},
        "train": {"epochs": spec["epochs"], "batch_size": spec["batch_size"],
                  "eval_batch_size": spec["eval_batch_size"], "lr": spec["lr"],
                  "warmup_steps": spec["warmup_steps"], "weight_decay": spec["weight_decay"],
                  "schedule": "linear", "max_grad_norm": spec["max_grad_norm"], "precision": "auto",
                  "compile": "on" if spec["variant"] == "d" else "off",
                  "seed": spec["seed"], "device": "cpu", "threads": spec["threads"], "bucket": True},
    })
    with tempfile.TemporaryDirectory(prefix="bench-encoderlab-") as root:
        t_e2e = time.perf_counter()
        run = F.fit(cfg, RunStore(root), progress=False, callback=callback)
        e2e = time.perf_counter() - t_e2e
        status = run.status
        run_info = run.info
    train_ev = [e for e in events if e["split"] == "train"]
    val_ev = [e for e in events if e["split"] == "validation"]
    final_ev = [e for e in events if e["split"] == "final_validation"]
    test_ev = [e for e in events if e["split"] == "test"]
    loop = sum(e["metrics"]["seconds"] for e in train_ev)
    start = train_ev[0]["_t"] - train_ev[0]["metrics"]["seconds"]
    # From the first batch to the end of the last checkpoint, less the last epoch's validation pass:
    # that pass is the one evaluation at the end, which the HF variants run outside their timed
    # window. The earlier per-epoch passes and all checkpoints cannot be switched off: they count.
    final_eval = clock["evals"][-1]
    train_wall = clock["last_ckpt_end"] - start - final_eval
    mid_evals = sum(clock["evals"][:-1])
    return {**info, "train_wall": train_wall, "e2e_wall": e2e, "padded_tokens": clock["padded"],
            "counted_real_tokens": clock["real"], "train_batches": clock["batches"],
            "steps": int(train_ev[-1]["step"]), "loop_seconds": loop,
            "eval_in_train_seconds": mid_evals, "final_epoch_eval_seconds": final_eval,
            "checkpoint_seconds": clock["ckpt"],
            "other_in_train_seconds": train_wall - loop - mid_evals - clock["ckpt"],
            "val_accuracy": val_ev[-1]["metrics"]["accuracy"],
            "val_accuracy_per_epoch": [e["metrics"]["accuracy"] for e in val_ev],
            "best_checkpoint_val_accuracy": final_ev[-1]["metrics"]["accuracy"] if final_ev else None,
            "test_accuracy": test_ev[-1]["metrics"]["accuracy"] if test_ev else None,
            "train_loss": train_ev[-1]["metrics"]["loss"], "run_status": status,
            "precision": run_info.get("precision"), "timing": run_info.get("timing"),
            "encoderlab_tokens_per_s": [e["metrics"]["tokens_per_s"] for e in train_ev]}


def child_main(variant: str, spec: dict, out_path: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = {**spec, "variant": variant}
    if variant == "a":
        res = run_hf(spec, best=False)
    elif variant == "b":
        res = run_hf(spec, best=True)
    else:
        res = run_encoderlab(spec)
    res["peak_rss_mb"] = _peak_rss_mb()
    ru = __import__("resource").getrusage(__import__("resource").RUSAGE_SELF)
    res["cpu_seconds"] = ru.ru_utime + ru.ru_stime
    res["variant"] = variant
    Path(out_path).write_text(json.dumps(res, indent=2))


# ---------------------------------------------------------------------------------------------
# parent side


def kernel_flags() -> str:
    """The CPU flags that decide the fast precision, as a comma list."""
    from encoderlab import machine
    fl = machine.cpu_flags()
    return ",".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in fl)


def _machine_busy() -> int:
    """Busy jiffies of the whole machine (all CPUs) since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f) - f[3] - f[4]          # minus idle and iowait


def _proc_cpu(pid: int) -> int:
    """utime + stime (jiffies) of one process, all its threads."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (OSError, IndexError, ValueError):
        return 0


def foreign_load(seconds: float, own_pid: int | None = None) -> float:
    """Mean CPU cores used by processes other than `own_pid` (and this one) over `seconds`."""
    hz = os.sysconf("SC_CLK_TCK")
    b0, o0, m0, t0 = _machine_busy(), _proc_cpu(own_pid) if own_pid else 0, _proc_cpu(os.getpid()), time.time()
    time.sleep(seconds)
    b1, o1, m1 = _machine_busy(), _proc_cpu(own_pid) if own_pid else 0, _proc_cpu(os.getpid())
    return max(0.0, ((b1 - b0) - (o1 - o0) - (m1 - m0)) / hz / (time.time() - t0))


def wait_quiet(limit: float, threshold: float = 0.25) -> float:
    """Wait (at most `limit` s) until other processes use < `threshold` cores; returns their load."""
    end = time.time() + limit
    while True:
        load = foreign_load(2.0)
        if load < threshold or time.time() >= end:
            return load
        print(f"  machine busy (other processes use {load:.2f} cores); waiting ...", flush=True)
        time.sleep(8)


def run_child(variant: str, spec: dict) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(spec["threads"]),
           "MKL_NUM_THREADS": str(spec["threads"]), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    try:
        t = time.perf_counter()
        hz = os.sysconf("SC_CLK_TCK")
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", variant,
                                 "--spec", json.dumps(spec), "--child-out", out], env=env)
        # the child's CPU time is sampled while it runs (it is gone from /proc once reaped)
        b0, m0, last = _machine_busy(), _proc_cpu(os.getpid()), 0
        while proc.poll() is None:
            last = max(last, _proc_cpu(proc.pid))
            time.sleep(0.5)
        b1, m1 = _machine_busy(), _proc_cpu(os.getpid())
        if proc.returncode != 0:
            raise SystemExit(f"variant {variant} failed (exit {proc.returncode})")
        res = json.loads(Path(out).read_text())
        res["process_wall"] = wall = time.perf_counter() - t
        # child CPU: the last sample misses up to 0.5 s; take the larger of it and the child's own count
        child = max(last / hz, res.get("cpu_seconds", 0.0))
        res["foreign_load_cores"] = max(0.0, ((b1 - b0) / hz - child - (m1 - m0) / hz) / wall)
        return res
    finally:
        Path(out).unlink(missing_ok=True)


def _body_parameters(model: str) -> int:
    """Parameters a token passes through in matmuls: the encoder without its embedding tables
    (training costs ~6 FLOP per such parameter per token: forward 2, backward 4)."""
    import torch
    from transformers import AutoConfig, AutoModel
    from encoderlab.models import registry
    with torch.device("meta"):
        m = AutoModel.from_config(AutoConfig.from_pretrained(registry.resolve(model)))
    return sum(p.numel() for n, p in m.named_parameters() if "embeddings" not in n)


def table(results: dict, spec: dict) -> str:
    rows = [("variant", "precision", "real tok/s", "% of matmul peak", "padded tok/s", "train wall s", "peak RSS MB",
             "val acc %", "pad share %", "e2e wall s", "other load")]
    for v, r in results.items():
        real = r["real_tokens_per_epoch"] * spec["epochs"]
        prec = "fp32" if v == "a" else spec["precision"]
        peak = spec["matmul_peak_gflops"] if prec == spec["precision"] else spec["fp32_gflops"]
        util = real / r["train_wall"] * spec["flop_per_token"] / 1e9 / peak
        rows.append((f"({v}) {VARIANTS[v]}", prec, f"{real / r['train_wall']:,.0f}", f"{100 * util:.0f}",
                     f"{r['padded_tokens'] / r['train_wall']:,.0f}", f"{r['train_wall']:.1f}",
                     f"{r['peak_rss_mb']:,.0f}", f"{100 * r['val_accuracy']:.2f}",
                     f"{100 * (1 - real / r['padded_tokens']):.1f}" if r["padded_tokens"] else "-",
                     f"{r['e2e_wall']:.1f}", f"{r.get('foreign_load_cores', 0):.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|")
    return "\n".join(lines)


def ratios(results: dict, spec: dict) -> list[str]:
    out = []
    if "c" not in results:
        return out
    tps = {v: r["real_tokens_per_epoch"] * spec["epochs"] / r["train_wall"] for v, r in results.items()}
    c = results["c"]
    for mine in ("c", "d"):
        for other, target in (("a", 3.0), ("b", 1.3)):
            if other in results and mine in results:
                ratio = tps[mine] / tps[other]
                dacc = 100 * (results[mine]["val_accuracy"] - results[other]["val_accuracy"])
                out.append(f"({mine})/({other}) real-token throughput: {ratio:.2f}x (target >= {target}x: "
                           f"{'met' if ratio >= target else 'NOT met'}); val accuracy ({mine})-({other}): "
                           f"{dacc:+.2f} points")
    loop_tps = c["real_tokens_per_epoch"] * spec["epochs"] / c["loop_seconds"]
    out.append(f"(c) training wall {c['train_wall']:.1f} s = train loop {c['loop_seconds']:.1f} s + validation "
               f"passes before the last epoch's {c['eval_in_train_seconds']:.1f} s + checkpoints "
               f"{c['checkpoint_seconds']:.1f} s + other {c['other_in_train_seconds']:.1f} s (last epoch's "
               f"validation pass, {c['final_epoch_eval_seconds']:.1f} s, not counted: it is the end-of-training "
               f"evaluation); loop-only real tok/s {loop_tps:,.0f}"
               + "".join(f", loop-only (c)/({o}) {loop_tps / tps[o]:.2f}x" for o in ("a", "b") if o in results))
    t = c.get("timing") or {}
    if t.get("test"):
        core = t["train"] + c["final_epoch_eval_seconds"] + t["test"]
        out.append(f"(c) fit() wall {c['e2e_wall']:.1f} s vs training + one validation pass + one test pass "
                   f"{core:.1f} s: {c['e2e_wall'] / core:.2f}x; parts (run.json timing): "
                   + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    out.append(f"(c) validation accuracy per epoch: "
               f"{', '.join(f'{100 * a:.2f}' for a in c['val_accuracy_per_epoch'])}; best-checkpoint "
               f"validation {100 * c['best_checkpoint_val_accuracy']:.2f}, test {100 * c['test_accuracy']:.2f}")
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p.add_argument("--variants", default="a,b,c", help="comma list of a, b, c, d (default a,b,c)")
    p.add_argument("--max-train", type=int, default=3000, help="training examples, stratified (default 3000)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=default_threads, help="torch threads in every child "
                   f"(default: all cores = {default_threads})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-ratio", type=float, default=0.1,
                   help="warmup steps = int(ratio x total steps), passed as a step count to all three")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="builtin:wordnet-lexname")
    p.add_argument("--model", default="builtin:minilm-l6")
    p.add_argument("--wait-quiet", type=float, default=120, metavar="SECONDS",
                   help="before each variant, wait up to this long for other processes to stop using "
                        "the CPU (default 120; 0 = do not wait)")
    p.add_argument("--busy-retries", type=int, default=1,
                   help="run a variant again (at most this many times) when other processes used more "
                        "than --busy-threshold cores during it; the quietest attempt is kept (default 1)")
    p.add_argument("--busy-threshold", type=float, default=0.3)
    p.add_argument("--cpu-kind", choices=["native", *EMULATE], default="native",
                   help="native, or emulate an older CPU kind in every child (avx2: torch and oneDNN capped at "
                        "AVX2, where bf16 matmuls are slow)")
    p.add_argument("--json", help="write all results (and the settings) to this JSON file")
    p.add_argument("--results-md", default="auto",
                   help="markdown results file; 'auto' = bench/results/finetune_throughput-<setup>.md "
                        "when all three variants ran, 'none' = do not write")
    p.add_argument("--setup", help="name of the setup in the results file name (default from CPU/threads/size)")
    p.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child, json.loads(args.spec), args.child_out)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--variants: unknown {bad}; choose from a, b, c, d")
    # before torch is imported here, so the probe below and every child see the same CPU kind
    os.environ.update(EMULATE.get(args.cpu_kind, {}))
    # steps per epoch are the same for all three: ceil(N / batch) with the last partial batch kept
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(args.threads)
    from encoderlab import machine
    probe = machine.probe(refresh=True)
    best = machine.resolve("auto", "cpu")
    import math
    from encoderlab.config import DataConfig
    from encoderlab.data.dataset import load_data
    n_train = len(load_data(DataConfig(source=args.data, max_train=args.max_train))[0].train)
    total = math.ceil(n_train / args.batch_size) * args.epochs
    spec = {"data": args.data, "model": args.model, "max_train": args.max_train, "split_seed": 0,
            "epochs": args.epochs, "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
            "lr": args.lr, "warmup_steps": int(args.warmup_ratio * total), "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm, "max_length": args.max_length, "seed": args.seed,
            "threads": args.threads, "precision": best.name}
    command = "python bench/finetune_throughput.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    peak = probe[best.name]
    emulated = f" (emulated: {args.cpu_kind})" if args.cpu_kind != "native" else ""
    header = (f"date {when} | CPU {machine.cpu_model()} ({os.cpu_count()} logical, {kernel_flags()}) | "
              f"torch capability {machine.capability()}{emulated} | "
              f"matmul fp32 {probe['fp32']:.1f} / bf16 {probe['bf16']:.1f} GFLOP/s -> best precision {best.name} | "
              f"torch threads {args.threads} | python {platform.python_version()}")
    spec["flop_per_token"] = 6 * _body_parameters(args.model)
    spec["matmul_peak_gflops"] = peak
    spec["fp32_gflops"] = probe["fp32"]
    print(header)
    print(f"settings: {json.dumps(spec)} ({total} optimizer steps)", flush=True)
    results = {}
    for v in variants:
        print(f"\n=== ({v}) {VARIANTS[v]} ===", flush=True)
        for attempt in range(1 + args.busy_retries):
            if args.wait_quiet > 0:
                wait_quiet(args.wait_quiet)
            r = run_child(v, spec)
            r["attempt"] = attempt + 1
            if v not in results or r["foreign_load_cores"] < results[v]["foreign_load_cores"]:
                results[v] = r
            if r["foreign_load_cores"] <= args.busy_threshold:
                break
            print(f"[{v}] other processes used {r['foreign_load_cores']:.2f} cores during this run "
                  f"(> {args.busy_threshold}); timings are unreliable"
                  + ("; running it again" if attempt < args.busy_retries else ""), flush=True)
        r = results[v]
        print(f"[{v}] train wall {r['train_wall']:.1f} s, val acc {100 * r['val_accuracy']:.2f}, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, threads {r['torch_threads']}", flush=True)
    import torch
    import transformers
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    for v, r in results.items():
        if r["counted_real_tokens"] != r["real_tokens_per_epoch"] * args.epochs:
            print(f"warning: ({v}) batches held {r['counted_real_tokens']} real tokens, expected "
                  f"{r['real_tokens_per_epoch'] * args.epochs}")
    tab = table(results, spec)
    rat = ratios(results, spec)
    print("\n" + tab + "\n")
    for line in rat:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "date": when, "cpu": machine.cpu_model(),
                                               "versions": versions, "settings": spec,
                                               "results": results}, indent=2))
    md = args.results_md
    if md == "auto":
        md = None
        if {"a", "b", "c"} <= set(variants):
            setup = args.setup or f"{args.threads}t-n{args.max_train}-e{args.epochs}"
            md = str(HERE / "results" / f"finetune_throughput-{setup}.md")
    elif md == "none":
        md = None
    if md:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(
            f"# Fine-tuning throughput: HF Trainer vs encoderlab\n\n"
            f"Command (from the repository root, venv active):\n\n    {command}\n\n"
            f"- {header}\n- {versions}\n- settings: `{json.dumps(spec)}`, {total} optimizer steps per variant\n"
            f"- real tokens per epoch: {next(iter(results.values()))['real_tokens_per_epoch']:,}\n\n"
            f"{tab}\n\n" + "\n".join(f"- {line}" for line in rat) + "\n\n"
            "Columns are described in [../README.md](../README.md).\n")
        print(f"\nwrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
