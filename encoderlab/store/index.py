"""The SQLite index of the run store: one row per run, one row per metric value.

The run folders are the truth; the index is a fast, queryable copy that `rebuild` recreates from
them. Schema changes are numbered migrations applied once each, inside a transaction: SQL text,
or a function (con, store root) for a change that must look before it leaps or read the folders."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Callable

from encoderlab.kinds import kind_of


def m002_kind_and_lineage(con: sqlite3.Connection, root: Path) -> None:
    """Each run's kind (`kinds.kind_of`) and the run it derives from, as indexed columns; rows
    already indexed get them from their run.json (else the kind from the `task` column)."""
    have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    for col in ("kind", "parent"):
        if col not in have:
            con.execute(f"ALTER TABLE runs ADD COLUMN {col} TEXT")
    con.execute("CREATE INDEX IF NOT EXISTS runs_kind ON runs(kind)")
    con.execute("CREATE INDEX IF NOT EXISTS runs_parent ON runs(parent)")
    for run_id, task in con.execute("SELECT id, task FROM runs").fetchall():
        try:
            info = json.loads((root / run_id / "run.json").read_text())
        except (OSError, ValueError):
            info = {"task": task}
        con.execute("UPDATE runs SET kind = ?, parent = ? WHERE id = ?",
                    (kind_of(info), info.get("parent"), run_id))


MIGRATIONS: list[str | Callable[[sqlite3.Connection, Path], None]] = [
    # 1: runs and metrics
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, grp TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL, config_hash TEXT NOT NULL, task TEXT, model TEXT, init TEXT,
        dataset TEXT, created TEXT NOT NULL, finished TEXT, pid INTEGER, host TEXT,
        best_metric TEXT, best_value REAL, test_accuracy REAL, test_macro_f1 REAL,
        epochs_done INTEGER DEFAULT 0, steps_done INTEGER DEFAULT 0, message TEXT
    );
    CREATE INDEX runs_name ON runs(name);
    CREATE INDEX runs_grp ON runs(grp);
    CREATE TABLE metrics (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step INTEGER, epoch REAL, split TEXT NOT NULL, name TEXT NOT NULL, value REAL
    );
    CREATE INDEX metrics_run ON metrics(run_id, split, name);
    """,
    # 2: kind and lineage
    m002_kind_and_lineage,
]


def connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=30, isolation_level=None)  # autocommit; explicit BEGINs
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA foreign_keys=ON")
    con.execute("PRAGMA synchronous=NORMAL")
    migrate(con, Path(path).parent)
    return con


def migrate(con: sqlite3.Connection, root: Path) -> None:
    version = con.execute("PRAGMA user_version").fetchone()[0]
    for n, sql in enumerate(MIGRATIONS[version:], version + 1):
        con.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated between our read and the lock
            if con.execute("PRAGMA user_version").fetchone()[0] >= n:
                con.execute("COMMIT")
                continue
            if callable(sql):
                sql(con, root)
            else:
                for stmt in filter(str.strip, sql.split(";")):
                    con.execute(stmt)
            con.execute(f"PRAGMA user_version = {n}")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise


RUN_COLUMNS = ("id", "name", "grp", "status", "config_hash", "task", "model", "init", "dataset",
               "created", "finished", "pid", "host", "best_metric", "best_value", "test_accuracy",
               "test_macro_f1", "epochs_done", "steps_done", "message", "kind", "parent")


def upsert_run(con: sqlite3.Connection, info: dict) -> None:
    """Index one run.json (its kind and parent derived here, so every writer indexes them)."""
    row = {**info, "kind": kind_of(info), "parent": info.get("parent")}
    cols = [c for c in RUN_COLUMNS if c in row]
    con.execute(
        f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c}=excluded.{c}' for c in cols if c != 'id')}",
        [row[c] for c in cols])


def add_metrics(con: sqlite3.Connection, run_id: str, step: int, epoch: float, split: str,
                values: dict[str, float]) -> None:
    con.executemany("INSERT INTO metrics (run_id, step, epoch, split, name, value) VALUES (?,?,?,?,?,?)",
                    [(run_id, step, epoch, split, k, float(v)) for k, v in values.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)])
