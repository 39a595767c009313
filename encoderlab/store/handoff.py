"""Run folders handed from a worker to the one index writer: a worker on another host writes its
runs into a store on its own disk, packs each folder (gzipped tar, bytes that travel through Ray),
and the writer unpacks them into the real store and indexes them (`RunStore.reindex`)."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from encoderlab.errors import StoreError


def pack(run_dir: str | Path, checkpoints: bool = False) -> bytes:
    """One run folder as gzipped tar bytes; checkpoints left out unless `checkpoints` (a finished
    run has none worth moving; an interrupted run sent to a worker to resume needs them)."""
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    skip = (lambda t: t) if checkpoints else (lambda t: None if "/checkpoints" in t.name else t)
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(run_dir, arcname=run_dir.name, filter=skip)
    return buf.getvalue()


def unpack(blob: bytes, root: str | Path) -> str:
    """Write a packed run folder into the store at `root` (atomically: unpacked beside it, then
    renamed); returns its run id. A folder already there is replaced."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        names = {m.name.split("/")[0] for m in tar.getmembers()}
        if len(names) != 1:
            raise StoreError(f"a handed-back run must be one folder, got {sorted(names)}")
        run_id = names.pop()
        tmp = root / f".unpack-{run_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tar.extractall(tmp, filter="data")
    dest = root / run_id
    if dest.exists():
        shutil.rmtree(dest)
    (tmp / run_id).rename(dest)
    tmp.rmdir()
    return run_id
