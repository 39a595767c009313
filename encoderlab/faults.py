"""Fault injection for the reliability tests and the soak benchmark.

`ENCODERLAB_FAULT=point[:n[:SIGNAL]]` kills this process with SIGKILL (no cleanup, no handlers: what
a power cut or the OOM killer does), or sends it SIGNAL (TERM, INT: the graceful stops), the n-th time
(default the first) execution reaches `fault(point)`.
Points: `step` (between backward and the optimizer step), `checkpoint` (weights written, the rest of
the checkpoint not yet), `eval` (after the first evaluation batch), `finish` (best model reloaded,
predictions and final model not yet written). Unset, a call costs one environment lookup."""

from __future__ import annotations

import os
import signal

POINTS = ("step", "checkpoint", "eval", "finish")
_reached: dict[str, int] = {}


def fault(point: str) -> None:
    spec = os.environ.get("ENCODERLAB_FAULT")
    if not spec:
        return
    name, nth, sig = (spec.split(":") + ["", ""])[:3]
    if name != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == int(nth or 1):
        os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))
