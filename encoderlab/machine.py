"""The machine as encoderlab sees it, and the defaults it decides: precision and threads.

bf16 is only worth it where its matmuls really are faster. On CPUs with AVX512-BF16 / AMX an
autocast bf16 linear runs ~2x fp32; on AVX2-only CPUs it runs ~50x *slower* (no native bf16
kernels). So `train.precision = "auto"` measures instead of guessing: a short probe times an
autocast linear layer of an encoder's shapes in both precisions and keeps bf16 only when it wins
clearly. The probe result is cached per (CPU model, torch capability, torch version, threads,
ISA overrides) in the user's cache folder, so it costs ~1 s once per machine."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch


# bf16 must beat fp32 by this factor to be chosen: a tie is not worth bf16's coarser numerics
BF16_MARGIN = 1.1
# the probe's shapes: tokens x hidden -> intermediate, as in a MiniLM/BERT-small feed-forward layer
PROBE_SHAPE = (512, 384, 1536)
PROBE_SECONDS = 0.6
PROBE_ROUNDS = 3
# environment variables that cap the kernels torch / oneDNN use (to emulate an older CPU kind)
ISA_OVERRIDES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


@dataclass(frozen=True)
class Precision:
    name: str        # "bf16" or "fp32": what autocast runs
    reason: str      # one line for the run output and run.json

    def as_fields(self) -> dict:
        return {"precision": self.name, "precision_reason": self.reason}


def capability() -> str:
    """torch's CPU kernel level: AVX512, AVX2, DEFAULT, ... (honours ATEN_CPU_CAPABILITY)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:   # very old torch
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cores_available() -> tuple[int, str]:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
        why = f"{n} CPU(s) in this process's affinity mask"
    except AttributeError:   # not Linux
        n = os.cpu_count() or 1
        why = f"{n} CPU(s) reported by the OS"
    quota = _cgroup_quota()
    if quota is not None and quota < n:
        return quota, f"cgroup CPU quota of {quota} (affinity allows {n})"
    return n, why


def _cgroup_quota() -> int | None:
    try:   # cgroup v2: "max 100000" or "200000 100000"
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if q != "max":
            return max(1, int(int(q) / int(period)))
    except (OSError, ValueError):
        pass
    try:   # cgroup v1
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if q > 0:
            return max(1, q // period)
    except (OSError, ValueError):
        pass
    return None


# set by a scheduler that reserves CPUs for this process (a Ray task): the default for threads = 0
THREADS_DEFAULT = 0


def apply_threads(requested: int) -> tuple[int, str]:
    """Set torch's intra-op threads: `requested`, or (0) the cores available to the process."""
    if requested:
        n, why = requested, "train.threads"
    elif THREADS_DEFAULT:
        n, why = THREADS_DEFAULT, "the CPUs the scheduler reserved for this run"
    else:
        n, why = cores_available()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n, why


# -- the precision probe -------------------------------------------------------------------------

def _gflops(dtype_name: str, shape=PROBE_SHAPE, seconds: float = PROBE_SECONDS) -> float:
    """GFLOP/s of an autocast linear layer (forward) of `shape` = (tokens, in, out) on the CPU."""
    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype_name == "bf16"):
        torch.nn.functional.linear(x, w)   # warm-up: kernel selection, weight cast
        reps, t0 = 0, time.perf_counter()
        while True:
            torch.nn.functional.linear(x, w)
            reps += 1
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
    return 2 * m * k * n * reps / dt / 1e9


def _cache_file() -> Path:
    base = os.environ.get("ENCODERLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "encoderlab")
    return Path(base) / "machine.json"


def _cache_key() -> str:
    parts = [cpu_model(), capability(), torch.__version__, str(torch.get_num_threads()),
             os.environ.get("ATEN_CPU_CAPABILITY", ""), os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
             "x".join(map(str, PROBE_SHAPE))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _busy() -> str | None:
    """'load 15.2 on 2 cores' when more processes wanted the CPU over the last minute than this
    process has cores, else None. A probe measured then is used once but not cached: seen on an
    AVX512-BF16 CPU at load 15 on 2 cores, 2-thread bf16 fell to 28.6 vs fp32 58.1 GFLOP/s (quiet:
    ~440 vs ~170) and the cached verdict kept every later run in fp32."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = cores_available()[0]
    return f"load {load:.1f} on {cores} core{'s' if cores != 1 else ''}" if load > cores + 0.5 else None


def probe(refresh: bool = False) -> dict:
    """{"fp32": GFLOP/s, "bf16": GFLOP/s, "cached": bool} of this CPU at the current thread count.
    A measurement taken while the machine is busy (`_busy`) is returned with "busy" and not cached."""
    path, key = _cache_file(), _cache_key()
    cache = {}
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    if not refresh and isinstance(cache.get(key), dict):
        return {**cache[key], "cached": True}
    # best of three interleaved rounds: another process on the cores slows a round, never speeds it
    # up, so the maximum per precision is the machine's speed and one noisy window cannot flip the choice
    rounds = [(_gflops("fp32", seconds=PROBE_SECONDS / 3), _gflops("bf16", seconds=PROBE_SECONDS / 3))
              for _ in range(PROBE_ROUNDS)]
    result = {"fp32": round(max(r[0] for r in rounds), 1), "bf16": round(max(r[1] for r in rounds), 1),
              "capability": capability(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    busy = _busy()
    if busy:
        return {**result, "cached": False, "busy": busy}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**cache, key: result}, indent=1))
        os.replace(tmp, path)      # concurrent probes: the last complete file wins
    except OSError:   # a read-only home: measure again next time
        pass
    return {**result, "cached": False}


def _cpu_ratio_text(p: dict) -> str:
    busy = f" (measured at {p['busy']}: not cached, measured again next run)" if p.get("busy") else ""
    return f"bf16 matmul {p['bf16']:.1f} GFLOP/s vs fp32 {p['fp32']:.1f} GFLOP/s on this CPU{busy}"


_warned: set[str] = set()


def resolve(requested: str, device: torch.device | str = "cpu") -> Precision:
    """The precision a loop runs at, and why. `auto`: bf16 only where measured (CPU) or known
    (CUDA with bf16 support) to be faster; an explicit `bf16` on a CPU where it is slow still runs
    but warns once with the measured ratio."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _resolve(requested, torch.device(device).type)


@functools.lru_cache(maxsize=None)
def _resolve(requested: str, dev: str) -> Precision:
    if requested == "fp32":
        return Precision("fp32", "fp32: train.precision = 'fp32'")
    if dev == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if requested == "bf16":
            return Precision("bf16", "bf16: train.precision = 'bf16'")
        return (Precision("bf16", "bf16: this CUDA device supports bf16") if ok
                else Precision("fp32", "fp32: this CUDA device has no bf16 support"))
    if dev != "cpu":
        return Precision("fp32" if requested == "auto" else requested, f"{requested} on {dev}")
    return cpu_precision(requested, probe())


def cpu_precision(requested: str, p: dict) -> Precision:
    """The CPU decision for `requested` (auto / bf16) from the probe result `p`."""
    fast = p["bf16"] > BF16_MARGIN * p["fp32"]
    if requested == "bf16":
        if not fast and "bf16" not in _warned:
            _warned.add("bf16")
            warnings.warn(f"train.precision = 'bf16' but {_cpu_ratio_text(p)} "
                          f"({p['fp32'] / max(p['bf16'], 1e-9):.1f}x slower); runs will crawl. "
                          "Use train.precision = 'auto' (the default) or 'fp32'.", stacklevel=4)
        return Precision("bf16", f"bf16: train.precision = 'bf16' ({_cpu_ratio_text(p)})")
    return Precision("bf16" if fast else "fp32", f"{'bf16' if fast else 'fp32'}: {_cpu_ratio_text(p)}")


def compile_choice(requested: str, steps_left: int, device, processes: int = 1) -> tuple[bool, str]:
    """Whether the training step runs under torch.compile, and why. `auto` stays eager: measured on
    the quickstart (MiniLM-L6, 750 steps, 2 CPU cores, AVX512-BF16) compiling cost ~150 s of the
    first epoch and the later epochs ran no faster (53 s vs 51 s eager), so it does not pay back here."""
    if requested == "on":
        return True, "train.compile = 'on'"
    if requested == "off":
        return False, "train.compile = 'off'"
    return False, "auto: eager (compiling was measured not to pay back on the quickstart)"


def run_fields(precision: str, threads: int, device) -> dict:
    """What a recipe records in run.json about the machine's choices."""
    prec = resolve(precision, device)
    n, why = apply_threads(threads)
    return {**prec.as_fields(), "threads": n, "threads_reason": why, "cpu_capability": capability()}


def describe(precision: str, threads: int, device) -> str:
    """One line for the run output: what precision and threads a run uses, and why."""
    f = run_fields(precision, threads, device)
    return f"precision {f['precision_reason']}; {f['threads']} thread(s): {f['threads_reason']}"


# -- doctor --------------------------------------------------------------------------------------

VERSIONED = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "onnxruntime", "ray", "mlflow-skinny",
             "optuna", "torchao")


def _version(dist: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def report(store_root: str | os.PathLike, refresh: bool = False) -> dict:
    """The machine as encoderlab sees it, for `encoderlab doctor` and bug reports."""
    import shutil
    import sys
    cores, cores_why = cores_available()
    threads, threads_why = apply_threads(0)
    p = probe(refresh=refresh)
    prec = cpu_precision("auto", p)      # from this measurement (a busy one is not cached: no second probe)
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve") if f in flags]
    cuda = {"available": torch.cuda.is_available()}
    if cuda["available"]:
        cuda.update(device=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported(),
                    precision=resolve("auto", "cuda").name)
    root = Path(store_root)
    probe_at = root if root.exists() else root.resolve().parent
    while not probe_at.exists():
        probe_at = probe_at.parent
    free = shutil.disk_usage(probe_at).free
    return {
        "cpu": {"model": cpu_model(), "capability": capability(), "isa_flags": isa,
                "overrides": {k: os.environ[k] for k in ISA_OVERRIDES if k in os.environ},
                "os_cpus": os.cpu_count(), "cores_available": cores, "cores_reason": cores_why},
        "matmul_gflops": {"fp32": p["fp32"], "bf16": p["bf16"], "cached": p["cached"], "busy": p.get("busy"),
                          "shape": "x".join(map(str, PROBE_SHAPE)), "cache": str(_cache_file())},
        "runs_use": {"precision": prec.name, "precision_reason": prec.reason,
                     "threads": threads, "threads_reason": threads_why},
        "cuda": cuda,
        "versions": {"python": sys.version.split()[0], "platform": platform.platform(),
                     **{d: _version(d) for d in VERSIONED}},
        "store": {"path": str(root.resolve()), "exists": root.exists(), "free_gb": round(free / 1e9, 1)},
    }
