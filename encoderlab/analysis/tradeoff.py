"""Accuracy vs cost of a teacher and the runs derived from it, read from the store: test accuracy
from each run, latency / throughput / size from one `encoderlab bench` session (its bench.json
rows), so every latency in the table was measured interleaved in the same process."""

from __future__ import annotations

import json
from typing import Sequence

from encoderlab.store.runs import Run

COLUMNS = [("target", "model @ runtime"), ("layers", "layers"), ("parameters", "params"),
           ("size_mb", "size MB", 1), ("accuracy", "test acc", 4), ("accuracy_change", "Δ acc (pts)", 2),
           ("latency_p50_ms", "p50 ms", 1), ("latency_p95_ms", "p95 ms", 1),
           ("latency_change_pct", "Δ latency %", 1), ("examples_per_s", "examples/s", 0),
           ("throughput_change_pct", "Δ throughput %", 1), ("size_change_pct", "Δ size %", 1),
           ("pareto", "Pareto")]


def bench_rows(run: Run) -> list[dict]:
    path = run.dir / "bench.json"
    return json.loads(path.read_text()) if path.exists() else []


def table(runs: Sequence[Run], session: str | None = None, batch_size: int | None = None) -> tuple[list[dict], dict]:
    """Rows of one bench session (default: the newest among `runs`) and one setting (default the
    first measured), with accuracy and % change versus the session's reference (its first target).
    Returns (rows, info about the session: load average, threads, setting)."""
    by_id = {r.id: r for r in runs}
    rows = [row for r in runs for row in bench_rows(r)]
    if not rows:
        return [], {}
    session = session or max(row["session"] for row in rows)
    rows = [row for row in rows if row["session"] == session]
    setting = (batch_size or rows[0]["batch_size"], rows[0]["seq_len"])
    rows = [dict(row) for row in rows if (row["batch_size"], row["seq_len"]) == (setting[0], rows[0]["seq_len"])]
    ref = next((row for row in rows if row["target"] == row["reference"]), None)
    for row in rows:
        run = by_id.get(row["run"])
        info = run.info if run else {}
        # a run's test accuracy was scored through its own runtime; served otherwise, it is unknown
        row["accuracy"] = info.get("test_accuracy") if row["runtime"] == info.get("runtime", "torch") else None
        row["layers"] = _layers(run)
    if ref is not None:
        for row in rows:
            if row["accuracy"] is not None and ref["accuracy"] is not None:
                row["accuracy_change"] = 100 * (row["accuracy"] - ref["accuracy"])
            row["size_change_pct"] = 100 * (row["size_mb"] / ref["size_mb"] - 1)
    for row in rows:
        row["pareto"] = "yes" if _pareto(row, rows) else ""
    rows.sort(key=lambda r: r["latency_p50_ms"], reverse=True)
    first = rows[0]
    meta = {"session": session, "reference": first["reference"], "batch_size": setting[0],
            "seq_len": setting[1], "threads": first.get("threads"), "load_average": first.get("load_average"),
            "rounds_batches": first.get("batches_timed")}
    return rows, meta


def _layers(run: Run | None):
    if run is None:
        return None
    try:
        return json.loads((run.dir / "model" / "config.json").read_text()).get("num_hidden_layers")
    except (OSError, ValueError):
        return None


def _pareto(row: dict, rows: list[dict]) -> bool:
    """No other row is at least as fast and at least as accurate, and strictly better in one."""
    if row.get("accuracy") is None:
        return False
    for o in rows:
        if o is row or o.get("accuracy") is None:
            continue
        if o["latency_p50_ms"] <= row["latency_p50_ms"] and o["accuracy"] >= row["accuracy"] and \
                (o["latency_p50_ms"] < row["latency_p50_ms"] or o["accuracy"] > row["accuracy"]):
            return False
    return True


def caption(meta: dict) -> str:
    load = meta.get("load_average")
    return (f"bench session {meta['session']}: batch size {meta['batch_size']}, sequence length "
            f"{meta['seq_len']}, {meta['threads']} thread(s), load average {load}; changes vs "
            f"{meta['reference']}")


def pareto_plot(rows: list[dict]) -> bytes:
    """Test accuracy vs p50 latency (log x); the Pareto frontier joined by a line."""
    from encoderlab.analysis.plots import png, pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    pts = [r for r in rows if r.get("accuracy") is not None]
    for r in pts:
        ref = r["target"] == r["reference"]
        ax.scatter(r["latency_p50_ms"], 100 * r["accuracy"], s=60 if ref else 35,
                   marker="*" if ref else ("o" if r["pareto"] else "x"),
                   color="black" if ref else ("tab:blue" if r["pareto"] else "tab:gray"), zorder=3)
        ax.annotate(r["target"], (r["latency_p50_ms"], 100 * r["accuracy"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    front = sorted((r for r in pts if r["pareto"]), key=lambda r: r["latency_p50_ms"])
    if len(front) > 1:
        ax.plot([r["latency_p50_ms"] for r in front], [100 * r["accuracy"] for r in front],
                color="tab:blue", lw=1, zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("latency p50 per batch (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs latency (Pareto frontier in blue)")
    ax.grid(alpha=0.3, which="both")
    return png(fig)
