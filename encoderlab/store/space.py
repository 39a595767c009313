"""Disk space of the run store: what each run holds, and what a completed run no longer needs.

A run can resume only while it is not completed; once completed, its checkpoints' optimizer state
(2x the model per checkpoint) and, unless asked for, the checkpoints' weights (the final model is in
model/) serve nothing. Recipes drop them as a run completes (`lean`); `encoderlab store gc` does the
same for runs stored before that, or with other settings. Running, interrupted and failed runs are
never touched: they may still resume."""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from encoderlab.kinds import REMOVED_FILE

OPTIMIZER_FILE = "trainer.pt"


def du(path: Path) -> int:
    """Bytes held by the files under `path` (0 when absent)."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _reclaimable(ckpts: Path, keep_weights: bool, keep_optimizer: bool) -> list[Path]:
    """The paths `lean` would delete."""
    if not ckpts.is_dir():
        return []
    if not keep_weights:
        return [ckpts]
    return [] if keep_optimizer else sorted(ckpts.glob(f"step-*/{OPTIMIZER_FILE}"))


def lean(ckpts: Path, keep_weights: bool, keep_optimizer: bool) -> int:
    """Drop what a completed run no longer needs from its checkpoints folder; returns bytes freed."""
    freed = 0
    for p in _reclaimable(ckpts, keep_weights, keep_optimizer):
        freed += du(p)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return freed


def lean_completed(run_dir: Path) -> int:
    """`lean` with the run's own keep_* settings: what every recipe calls as its run completes."""
    return lean(run_dir / "checkpoints", *_keep_flags(run_dir))


@dataclass
class Usage:
    run: str
    group: str
    status: str
    total: int          # bytes in the run folder
    checkpoints: int    # of which in checkpoints/
    model: int          # of which in model/
    reclaimable: int    # what `store gc` would free
    paths: list[Path]


def _keep_flags(run_dir: Path) -> tuple[bool, bool]:
    try:
        train = tomllib.loads((run_dir / "config.toml").read_text()).get("train", {})
    except (OSError, ValueError):
        return True, True          # unreadable config: keep everything
    return bool(train.get("keep_final_checkpoints", False)), bool(train.get("keep_optimizer", False))


def usage(store) -> list[Usage]:
    """One row per run folder, largest first."""
    rows = []
    for info in store.list():
        run_dir = store.root / info["id"]
        if not run_dir.is_dir():
            continue
        status = store.effective_status(info)
        paths = _reclaimable(run_dir / "checkpoints", *_keep_flags(run_dir)) if status == "completed" else []
        rows.append(Usage(info["id"], info.get("grp") or "", status, du(run_dir), du(run_dir / "checkpoints"),
                          du(run_dir / "model"), sum(du(p) for p in paths), paths))
    return sorted(rows, key=lambda u: -u.total)


def gc(store, apply: bool = False) -> list[Usage]:
    """What completed runs no longer need (dry run), or delete it (`apply`). Re-reads each run's
    status just before deleting, so a run resumed meanwhile is left alone."""
    rows = [u for u in usage(store) if u.reclaimable]
    if apply:
        for u in rows:
            info = store.get(u.run).info
            if store.effective_status(info) != "completed":
                u.reclaimable, u.paths = 0, []
                continue
            keep_w, keep_o = _keep_flags(store.root / u.run)
            lean(store.root / u.run / "checkpoints", keep_w, keep_o)
    return rows


# -- final models of runs a search or sweep did not pick ---------------------------------------

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx")


def weight_files(run_dir: Path) -> list[Path]:
    """The final model's weight files (config, tokenizer and metadata are not weights)."""
    folder = run_dir / "model"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def drop_weights(run_dir: Path, note: dict) -> int:
    """Delete a completed run's final weights, leaving model/REMOVED_FILE (written first, atomically,
    so a run interrupted half-way is already refused) and everything else; returns bytes freed."""
    from encoderlab.store.atomic import write_json
    files = weight_files(run_dir)
    write_json(run_dir / "model" / REMOVED_FILE,
               {"removed": datetime.now().astimezone().isoformat(timespec="seconds"),
                "files": [p.relative_to(run_dir / "model").as_posix() for p in files], **note})
    freed = 0
    for p in files:
        freed += p.stat().st_size
        p.unlink(missing_ok=True)
    return freed
