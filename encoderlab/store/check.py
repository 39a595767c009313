"""Store integrity: find what a crash, a full disk or a hand edit can leave behind, and repair what is
safe to repair.

Findings, by kind:
  orphan_row        an index row whose run folder is gone              fix: drop the row (rebuild)
  unindexed         a run folder the index does not list               fix: index it (rebuild)
  stale_index       index status / metric count differs from the folder fix: re-index (rebuild)
  partial           a run folder without a readable run.json / config   not fixed: inspect, then delete
  corrupt_checkpoint a checkpoint folder with a missing or unreadable file not fixed (resume uses the
                    newest whole checkpoint, so delete it by hand once inspected)
  torn_metrics      metrics.jsonl ends in a half-written line           fix: drop the torn line
  temp              a temp file/folder of a write that never finished   fix: delete it (only when the
                    (its process is dead)                               writing process is gone)

`partial` and `corrupt_checkpoint` are the ones that can lose data; the others are leftovers."""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from encoderlab.store.runs import RunStore

CORRUPT = ("partial", "corrupt_checkpoint")
_TMP_FILE = re.compile(r"^\..+\.tmp-(\d+)$")          # atomic.write_bytes: .<name>.tmp-<pid>
_TMP_CKPT = re.compile(r"^\.step-\d+\.tmp$")           # checkpoint.save: .step-<n>.tmp/


@dataclass(frozen=True)
class Finding:
    kind: str
    run: str
    path: str
    detail: str


@dataclass
class Report:
    runs: int = 0
    checkpoints: int = 0
    findings: list[Finding] = field(default_factory=list)
    fixed: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f not in self.fixed]

    @property
    def corrupt(self) -> list[Finding]:
        return [f for f in self.problems if f.kind in CORRUPT]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _checkpoint_problem(folder: Path, resumable: bool = True) -> str:
    """What is wrong with a checkpoint; a completed run's checkpoints need no optimizer state."""
    from safetensors import safe_open
    for name in ("model.safetensors", "trainer.pt", "state.json") if resumable else ("model.safetensors", "state.json"):
        if not (folder / name).is_file():
            return f"{name} missing"
    try:
        state = json.loads((folder / "state.json").read_text())
        if "step" not in state:
            return "state.json has no step"
    except ValueError as e:
        return f"state.json unreadable: {e}"
    try:
        with safe_open(str(folder / "model.safetensors"), "pt") as fh:
            if not list(fh.keys()):
                return "model.safetensors holds no tensors"
    except Exception as e:   # noqa: BLE001 - any failure to parse the header is the finding
        return f"model.safetensors unreadable: {e}"
    return ""


def _run_folder(store: RunStore, folder: Path, report: Report) -> dict | None:
    rid = folder.name
    try:
        info = json.loads((folder / "run.json").read_text())
        tomllib.loads((folder / "config.toml").read_text())
    except FileNotFoundError as e:
        report.findings.append(Finding("partial", rid, str(folder), f"{Path(e.filename).name} missing"))
        return None
    except ValueError as e:
        report.findings.append(Finding("partial", rid, str(folder), f"unreadable: {e}"))
        return None
    pid_alive = info.get("status") == "running" and store.effective_status(info) == "running"
    for p in folder.rglob(".*"):
        m = _TMP_FILE.match(p.name)
        if (m and not _alive(int(m.group(1)))) or (_TMP_CKPT.match(p.name) and not pid_alive):
            report.findings.append(Finding("temp", rid, str(p), "left by a write that never finished"))
    ckpts = folder / "checkpoints"
    for c in sorted(ckpts.glob("step-*")) if ckpts.is_dir() else []:
        report.checkpoints += 1
        problem = _checkpoint_problem(c, resumable=info.get("status") != "completed")
        if problem:
            report.findings.append(Finding("corrupt_checkpoint", rid, str(c), problem))
    metrics = folder / "metrics.jsonl"
    if metrics.exists():
        text = metrics.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        if lines:
            try:
                json.loads(lines[-1])
            except ValueError:
                report.findings.append(Finding("torn_metrics", rid, str(metrics),
                                               f"last line is half-written ({len(lines[-1])} chars)"))
    return info


def check(store: RunStore) -> Report:
    """Compare every run folder with the index and look inside each folder."""
    report = Report()
    root = store.root
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} \
        if root.exists() else {}
    infos = {}
    for rid, folder in sorted(folders.items()):
        report.runs += 1
        info = _run_folder(store, folder, report)
        if info is not None:
            infos[rid] = info
    rows = {r["id"]: r for r in store.con.execute("SELECT id, status FROM runs").fetchall()}
    counts = dict(store.con.execute("SELECT run_id, COUNT(*) FROM metrics GROUP BY run_id").fetchall())
    for rid in sorted(set(rows) - set(folders)):
        report.findings.append(Finding("orphan_row", rid, str(root / rid), "indexed, but the folder is gone"))
    for rid, info in infos.items():
        if rid not in rows:
            report.findings.append(Finding("unindexed", rid, str(folders[rid]), "not in index.sqlite"))
            continue
        if rows[rid]["status"] != info.get("status"):
            report.findings.append(Finding("stale_index", rid, str(folders[rid]),
                                           f"index says {rows[rid]['status']}, run.json {info.get('status')}"))
            continue
        run = store.get(rid)
        n = sum(sum(1 for v in ev.get("metrics", {}).values()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)) for ev in run.events())
        if n != counts.get(rid, 0):
            report.findings.append(Finding("stale_index", rid, str(folders[rid]),
                                           f"{counts.get(rid, 0)} metric values indexed, {n} in metrics.jsonl"))
    return report


def fix(store: RunStore, report: Report) -> Report:
    """Repair the safe kinds (temp leftovers, torn metric lines, the index); never touches partial
    runs or corrupt checkpoints. Returns the report with `fixed` filled in."""
    rebuild = False
    for f in report.findings:
        if f.kind == "temp":
            p = Path(f.path)
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        elif f.kind == "torn_metrics":
            p = Path(f.path)
            lines = p.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            from encoderlab.store import atomic
            atomic.write_text(p, "".join(lines[:-1]))
            rebuild = True
        elif f.kind in ("orphan_row", "unindexed", "stale_index"):
            rebuild = True
        else:
            continue
        report.fixed.append(f)
    if rebuild:
        store.rebuild()
    return report
