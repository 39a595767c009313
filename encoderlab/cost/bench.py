"""Inference latency / throughput of served models and training-step throughput.

Several models are measured in ONE process, interleaved: each round runs every model over the same
batches, in rotating order, so a noisy shared CPU slows all of them alike. Threads are pinned
(torch and onnxruntime) and reported with the load average, since results depend on both."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from encoderlab import machine

from encoderlab.cost.runtime import Predictor
from encoderlab.encode.text import Encoded, collate


def _status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status (VmHWM, VmRSS) in MB; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set of this process in MB (VmHWM), else ru_maxrss."""
    peak = _status_mb("VmHWM")
    if peak is None:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak


def rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return float("nan") if rss is None else rss


def reset_peak_rss() -> bool:
    """Restart VmHWM at the current RSS (Linux >= 4.0), so a later peak belongs to what ran since."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def data_batches(enc: Encoded, batch_size: int, n_batches: int, pad_id: int) -> list[dict]:
    """Consecutive examples in the split's own order (real length mix), each batch padded to its
    longest example, as a server batching incoming requests would."""
    n = min(len(enc), batch_size * n_batches)
    return [_no_labels(collate(enc, np.arange(i, min(i + batch_size, n)), pad_id))
            for i in range(0, n, batch_size)]


def fixed_batches(enc: Encoded, batch_size: int, seq_len: int, n_batches: int) -> list[dict]:
    """(batch_size, seq_len) batches with no padding: each real example's tokens repeated to fill
    seq_len (the [CLS] ... [SEP] frame kept), so shapes are fixed but the tokens are real text."""
    out, i = [], 0
    for _ in range(n_batches):
        ids = np.empty((batch_size, seq_len), dtype=np.int64)
        for r in range(batch_size):
            x = enc.ids[i % len(enc)]
            i += 1
            body = x[1:-1] if len(x) > 2 else x
            ids[r] = np.concatenate([x[:1], np.resize(body, max(seq_len - 2, 0)), x[-1:]])[:seq_len]
        out.append({"input_ids": torch.from_numpy(ids), "attention_mask": torch.ones(batch_size, seq_len,
                                                                                    dtype=torch.long)})
    return out


def _no_labels(batch: dict) -> dict:
    batch.pop("labels", None)
    return batch


@dataclass
class Measured:
    name: str
    latencies: list[float] = field(default_factory=list)   # seconds per batch
    examples: int = 0
    tokens: int = 0
    seconds: float = 0.0
    peak_extra_mb: float = 0.0

    def summary(self) -> dict:
        ms = np.asarray(self.latencies) * 1000
        return {"latency_p50_ms": float(np.percentile(ms, 50)), "latency_p95_ms": float(np.percentile(ms, 95)),
                "latency_mean_ms": float(ms.mean()), "batches_timed": len(ms),
                "examples_per_s": self.examples / self.seconds, "tokens_per_s": self.tokens / self.seconds,
                "inference_peak_extra_mb": self.peak_extra_mb}


def interleaved(predictors: dict[str, Predictor], batches: list[dict], rounds: int = 5,
                warmup: int = 3, progress=None) -> dict[str, dict]:
    """Per predictor: latency p50/p95/mean per batch (ms), examples/s, real tokens/s and the extra
    memory its inference peaks at above the RSS before it ran."""
    for p in predictors.values():                  # warm-up: allocator, kernels, ORT arenas
        for b in batches[:warmup]:
            p.logits(b)
    got = {name: Measured(name) for name in predictors}
    names = list(predictors)
    real = [int(b["attention_mask"].sum()) for b in batches]
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]   # rotate: nobody is always first
        for name in order:
            p, m = predictors[name], got[name]
            base = rss_mb()
            reset_peak_rss()
            for b, n_tok in zip(batches, real):
                t0 = time.perf_counter()
                p.logits(b)
                dt = time.perf_counter() - t0
                m.latencies.append(dt)
                m.seconds += dt
                m.examples += len(b["input_ids"])
                m.tokens += n_tok
            m.peak_extra_mb = max(m.peak_extra_mb, peak_rss_mb() - base)
            if progress:
                progress(r, name)
    return {name: m.summary() for name, m in got.items()}


def environment(threads: int) -> dict:
    import platform
    # the time names the bench session: microseconds, so two sessions within one second (a fast
    # machine, a script) stay apart and still sort by time
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"threads": threads, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
            "machine": platform.machine(), "time": stamp}


def train_step_throughput(model: torch.nn.Module, enc: Encoded, batch_size: int, steps: int, pad_id: int,
                          precision: str = "auto", warmup: int = 2, lr: float = 5e-5) -> dict:
    """Training tokens/s of forward + backward + AdamW step on real batches (length-bucketed as
    fit does), after `warmup` steps; the model's weights change, so pass a copy you can discard."""
    from encoderlab.encode.text import train_batches
    from encoderlab.train.loop import autocast
    batches = train_batches(enc.lengths, batch_size, seed=0, bucket=True)
    need = steps + warmup
    batches = (batches * math.ceil(need / max(len(batches), 1)))[:need]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    dev = torch.device("cpu")
    times, tokens, examples = [], 0, 0
    for i, idx in enumerate(batches):
        batch = collate(enc, idx, pad_id)
        t0 = time.perf_counter()
        with autocast(dev, precision):
            loss = model(**batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
            tokens += int(enc.lengths[idx].sum())
            examples += len(idx)
    model.eval()
    total = sum(times)
    return {"train_tokens_per_s": tokens / total, "train_examples_per_s": examples / total,
            "train_step_p50_ms": float(np.median(times) * 1000), "train_steps_timed": len(times),
            "train_precision": machine.resolve(precision, dev).name, "train_batch_size": batch_size}


# ---------------------------------------------------------------------------------------------
# targets from the store, results back into it


def resolve_target(store, spec: str):
    """'RUN' (served by its own default runtime), 'RUN@RUNTIME', or a saved model folder
    (optionally '@RUNTIME'). Returns (label, run or None, model folder, runtime)."""
    from encoderlab import kinds
    from encoderlab.cost.runtime import check_runtime
    ref, _, rt = spec.partition("@")
    folder = Path(ref)
    if (folder / "encoderlab.json").exists():
        return spec, None, folder, check_runtime(rt or "torch")
    run = store.get(ref)
    kinds.require(run, "bench")
    runtime = check_runtime(rt or run.info.get("runtime") or "torch")
    return f"{run.info['name']}@{runtime}", run, run.dir / "model", runtime


def bench_targets(store, specs: list[str], *, batch_sizes=(32,), seq_lens=(0,), split: str = "validation",
                  n_batches: int = 20, rounds: int = 5, warmup: int = 3, threads: int = 1,
                  train_steps: int = 0, save: bool = True, progress=None) -> list[dict]:
    """Benchmark every target interleaved, per (batch size, sequence length) setting; seq_len 0 =
    real data batches from `split` of the first target's data. Stores each run's rows in its
    bench.json (with the session id, the load average and the first target as reference).
    Returns one row per target and setting, with % change vs the first target."""
    from encoderlab import config as C
    from encoderlab.cost.runtime import Predictor
    from encoderlab.data.dataset import load_data
    from encoderlab.store import atomic
    import json
    torch.set_num_threads(threads)
    targets = [resolve_target(store, s) for s in specs]
    preds = {label: Predictor(folder, rt, threads) for label, _, folder, rt in targets}
    if len(preds) != len(targets):
        raise ValueError("the same target is listed twice")
    first_run = next((r for _, r, _, _ in targets if r is not None), None)
    first = preds[targets[0][0]]
    cfg = first_run.config() if first_run else C.ExperimentConfig()
    data, _ = load_data(cfg.data)
    from encoderlab.encode.text import encode_split
    enc = encode_split(first.tokenizer, getattr(data, split), first.meta["max_length"], first.meta["truncation"])
    env = environment(threads)
    session = env["time"]
    rows = []
    for bs in batch_sizes:
        for sl in seq_lens:
            batches = fixed_batches(enc, bs, sl, n_batches) if sl else \
                data_batches(enc, bs, n_batches, first.tokenizer.pad_token_id or 0)
            res = interleaved(preds, batches, rounds=rounds, warmup=warmup, progress=progress)
            ref = res[targets[0][0]]
            for label, run, folder, rt in targets:
                r = res[label]
                rows.append({"target": label, "run": run.id if run else str(folder), "runtime": rt,
                             "batch_size": bs, "seq_len": sl or "data", "data_split": split if not sl else "",
                             "mean_tokens_per_example": float(np.mean([int(b["attention_mask"].sum()) for b in batches])
                                                              / bs),
                             **r, "size_mb": preds[label].size_bytes / 1e6, "parameters": preds[label].parameters,
                             "latency_change_pct": 100 * (r["latency_p50_ms"] / ref["latency_p50_ms"] - 1),
                             "throughput_change_pct": 100 * (r["examples_per_s"] / ref["examples_per_s"] - 1),
                             "reference": targets[0][0], "session": session, **env})
    if train_steps:
        for label, run, folder, rt in targets:
            if rt != "torch":
                continue
            from encoderlab.models import classifier
            model, _, _ = classifier.load(folder)
            tenc = encode_split(first.tokenizer, data.train, first.meta["max_length"], first.meta["truncation"])
            tr = train_step_throughput(model, tenc, cfg.train.batch_size, train_steps,
                                       first.tokenizer.pad_token_id or 0, cfg.train.precision)
            for row in rows:
                if row["target"] == label:
                    row.update(tr)
    if save:
        for label, run, _, _ in targets:
            if run is None:
                continue
            path = run.dir / "bench.json"
            old = json.loads(path.read_text()) if path.exists() else []
            atomic.write_text(path, json.dumps(old + [r for r in rows if r["target"] == label], indent=1))
    return rows
