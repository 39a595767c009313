"""The run store: one folder per run (the truth) plus the SQLite index (a rebuildable copy).

    <root>/index.sqlite
    <root>/<run-id>/config.toml  run.json  labels.json  metrics.jsonl
                    checkpoints/step-N/  model/  predictions/
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from encoderlab import config as C
from encoderlab.errors import StoreError
from encoderlab.store import atomic, index


def now() -> str:
    # milliseconds: runs of a sweep start within the same second and must still order correctly
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _slug(name: str) -> str:
    # a path-safe folder-name part: no separators, no '..', no leading dot (hidden files)
    slug = re.sub(r"\.{2,}", "-", re.sub(r"[^A-Za-z0-9_.-]+", "-", name))
    return re.sub(r"-{2,}", "-", slug).strip("-.")[:40] or "run"


class Run:
    """Handle on one run folder; every write goes through the store so the index stays in step."""

    def __init__(self, store: "RunStore", run_dir: Path):
        self.store, self.dir, self.id = store, run_dir, run_dir.name

    @property
    def info(self) -> dict:
        return json.loads((self.dir / "run.json").read_text())

    @property
    def status(self) -> str:
        return self.store.effective_status(self.info)

    def config(self) -> C.ExperimentConfig:
        return C.from_dict(C.ExperimentConfig, C.load_raw(self.dir / "config.toml"))

    def labels(self) -> list[str]:
        return json.loads((self.dir / "labels.json").read_text())

    def events(self) -> list[dict]:
        """metrics.jsonl, skipping a torn last line left by a killed process."""
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def update(self, **fields) -> None:
        info = {**self.info, **fields}
        atomic.write_json(self.dir / "run.json", info)
        self.store._index_run(info)

    def log(self, event: dict) -> None:
        """Append one metrics event ({"split", "step", "epoch", "metrics": {...}}) to file and index."""
        event = {"time": now(), **event}
        atomic.append_line(self.dir / "metrics.jsonl", json.dumps(event))
        self.store._index_metrics(self.id, event)

    @property
    def checkpoints(self) -> list[Path]:
        folder = self.dir / "checkpoints"
        found = [p for p in folder.glob("step-*") if p.is_dir() and (p / "state.json").exists()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))


class RunStore:
    """`indexed=False`: a worker's view that writes run folders only and leaves the index to one
    writer (the search coordinator / the sweep driver), which calls `reindex` on what it hands back:
    SQLite's WAL must not be shared by processes on several hosts of a network filesystem."""

    def __init__(self, root: str | os.PathLike = "runs", indexed: bool = True):
        self.root = Path(root)
        self.indexed = indexed
        self._con: sqlite3.Connection | None = None

    @property
    def con(self) -> sqlite3.Connection:
        if not self.indexed:    # a worker's view: reading or writing the index here is a bug
            raise StoreError(f"this view of {self.root} writes run folders only; the index belongs to "
                             "one writer (the search coordinator / the sweep driver)")
        if self._con is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._con = index.connect(self.root / "index.sqlite")
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    # -- writing -----------------------------------------------------------------------------

    def create(self, cfg: C.ExperimentConfig, labels: list[str], **fields) -> Run:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{_slug(cfg.name)}-{secrets.token_hex(2)}"
        run_dir = self.root / run_id
        run_dir.mkdir(parents=True)
        atomic.write_text(run_dir / "config.toml", C.to_toml(cfg))
        atomic.write_json(run_dir / "labels.json", labels)
        info = {"id": run_id, "name": cfg.name, "grp": cfg.group, "status": "running",
                "config_hash": C.config_hash(cfg), "model": cfg.model.path, "init": cfg.model.init,
                "dataset": cfg.data.source, "created": now(), "finished": None,
                "pid": os.getpid(), "host": socket.gethostname(), **fields}
        atomic.write_json(run_dir / "run.json", info)
        self._index_run(info)
        return Run(self, run_dir)

    @contextlib.contextmanager
    def running(self, run: Run, state: dict | None = None, restarts: str = ""):
        """The one lifecycle of a run while a recipe works on it. Ctrl-C or `kill` (a
        KeyboardInterrupt) marks it interrupted, naming the step reached (`state["step"]`) and, for
        kinds that restart rather than resume, `restarts`; any other error marks it failed with the
        error (an error's `run_message` when it has one; an error with `run_status` ends it with
        that status instead, e.g. `pruned`). Both re-raise. Completion is the recipe's
        last act (`run.update(status="completed", ...)`), inside the block."""
        try:
            yield run
        except KeyboardInterrupt:
            where = f"stopped at step {state.get('step', 0)}" if state is not None else "stopped"
            run.update(status="interrupted", message=where + (f" ({restarts})" if restarts else ""))
            raise
        except BaseException as e:
            # an error may name another end than failed: a search's pruner stops a run as `pruned`
            status = getattr(e, "run_status", "failed")
            run.update(status=status, message=(getattr(e, "run_message", None) or f"{type(e).__name__}: {e}")[:500],
                       **({"finished": now()} if status != "failed" else {}))
            raise

    def _index_run(self, info: dict) -> None:
        if not self.indexed:
            return
        self.con.execute("BEGIN IMMEDIATE")
        try:
            index.upsert_run(self.con, info)
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise

    def _index_metrics(self, run_id: str, event: dict) -> None:
        if not self.indexed:
            return
        self.con.execute("BEGIN IMMEDIATE")
        try:
            index.add_metrics(self.con, run_id, event.get("step"), event.get("epoch"),
                              event["split"], event.get("metrics", {}))
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise

    def reindex(self, run_id: str) -> None:
        """Re-read one run folder into the index (its row and all its metrics)."""
        run = Run(self, self.root / run_id)
        info, events = run.info, run.events()
        self.con.execute("BEGIN IMMEDIATE")
        try:
            self.con.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            index.upsert_run(self.con, info)
            for ev in events:
                index.add_metrics(self.con, run_id, ev.get("step"), ev.get("epoch"),
                                  ev["split"], ev.get("metrics", {}))
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise

    def rebuild(self) -> int:
        """Recreate the index from the run folders (e.g. after deleting index.sqlite)."""
        runs = [p for p in self.root.iterdir() if (p / "run.json").exists()] if self.root.exists() else []
        self.con.execute("BEGIN IMMEDIATE")
        try:
            self.con.execute("DELETE FROM metrics")
            self.con.execute("DELETE FROM runs")
            for p in sorted(runs):
                run = Run(self, p)
                index.upsert_run(self.con, run.info)
                for ev in run.events():
                    index.add_metrics(self.con, run.id, ev.get("step"), ev.get("epoch"),
                                      ev["split"], ev.get("metrics", {}))
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        return len(runs)

    # -- reading -----------------------------------------------------------------------------

    @staticmethod
    def effective_status(info: dict) -> str:
        """A 'running' run whose process is gone (killed, machine rebooted) is 'interrupted'."""
        if info.get("status") != "running":
            return info.get("status", "unknown")
        if info.get("host") == socket.gethostname() and info.get("pid"):
            try:
                os.kill(int(info["pid"]), 0)
            except ProcessLookupError:
                return "interrupted"
            except PermissionError:
                pass
        return "running"

    def get(self, ref: str) -> Run:
        """A run by id, unique id prefix or suffix, 'last' (newest), or a run name: the newest
        completed run of that name (else the newest of that name)."""
        ids = self.ids()
        if ref in ("last", "latest"):
            if not ids:
                raise StoreError(f"no runs in {self.root}")
            newest = max(ids, key=lambda i: (Run(self, self.root / i).info.get("created", ""), i))
            return Run(self, self.root / newest)
        if ref in ids:
            return Run(self, self.root / ref)
        hits = [i for i in ids if i.startswith(ref) or i.endswith(ref)]
        if len(hits) == 1:
            return Run(self, self.root / hits[0])
        named = self._named(ref) if ids else []
        if named:
            done = [r for r in named if r["status"] == "completed"]
            return Run(self, self.root / (done or named)[-1]["id"])
        if not hits:
            raise StoreError(f"no run '{ref}' in {self.root} (see `encoderlab runs`)")
        raise StoreError(f"'{ref}' matches {len(hits)} runs: {', '.join(hits[:5])}; give more of the id")

    def _named(self, name: str) -> list[dict]:
        """Rows of the runs called `name`, oldest first: from the index, or from the run folders
        in a view without one."""
        if self.indexed:
            return [r for r in self.list(name=name) if r["name"] == name]
        infos = [Run(self, self.root / i).info for i in self.ids()]
        rows = [{**info, "status": self.effective_status(info)} for info in infos if info.get("name") == name]
        return sorted(rows, key=lambda r: (r.get("created") or "", r["id"]))

    def ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "run.json").exists())

    def _indexed(self) -> sqlite3.Connection:
        """The index, rebuilt from the folders first when it is missing."""
        if not (self.root / "index.sqlite").exists() and self.ids():
            self.rebuild()
        return self.con

    def list(self, name: str | None = None, status: str | None = None, group: str | None = None,
             limit: int = 0, kind: str | None = None) -> list[dict]:
        """Index rows, newest last; `name`/`group` accept SQL LIKE patterns (* works as %);
        `kind` is a row of `encoderlab.kinds.KINDS`."""
        con = self._indexed()
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if name:
            sql += " AND name LIKE ?"
            args.append(name.replace("*", "%"))
        if group:
            sql += " AND grp LIKE ?"
            args.append(group.replace("*", "%"))
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY created, id"
        rows = [dict(r) for r in con.execute(sql, args)]
        for r in rows:
            r["status"] = self.effective_status(r)
        if status:
            rows = [r for r in rows if r["status"] == status]
        return rows[-limit:] if limit else rows

    # -- lineage (runs derived from runs: distill, truncate, quantize, export) -----------------

    def parent_of(self, run_id: str) -> str | None:
        row = self._indexed().execute("SELECT parent FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row["parent"] if row else None

    def children(self, run_id: str) -> list[str]:
        """Ids of the runs made directly from `run_id`, oldest first."""
        return [r["id"] for r in self._indexed().execute(
            "SELECT id FROM runs WHERE parent = ? ORDER BY created, id", (run_id,))]

    def descendants(self, run_id: str) -> list[str]:
        """Ids of every run derived from `run_id`, directly or through others, oldest first."""
        return [r["id"] for r in self._indexed().execute(
            """WITH RECURSIVE tree(id) AS (SELECT id FROM runs WHERE parent = ?
                   UNION SELECT runs.id FROM runs JOIN tree ON runs.parent = tree.id)
               SELECT runs.id FROM runs JOIN tree USING (id) ORDER BY created, id""", (run_id,))]

    def metrics(self, run_id: str, split: str | None = None) -> list[dict]:
        sql, args = "SELECT step, epoch, split, name, value FROM metrics WHERE run_id = ?", [run_id]
        if split:
            sql += " AND split = ?"
            args.append(split)
        return [dict(r) for r in self.con.execute(sql + " ORDER BY rowid", args)]
