"""Run store: index mirrors folders, survives deletion, detects dead runs, resolves ids."""

from __future__ import annotations

import json
import sqlite3

import pytest

from encoderlab import config as C
from encoderlab.errors import StoreError
from encoderlab.store.runs import RunStore


def _make(store, name="exp", **fields):
    cfg = C.from_dict(C.ExperimentConfig, {"name": name})
    run = store.create(cfg, ["a", "b"], **fields)
    run.log({"split": "validation", "step": 1, "epoch": 1.0, "metrics": {"loss": 0.5, "accuracy": 0.75}})
    return run


def test_index_is_wal_and_versioned(store):
    _make(store)
    assert store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.con.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_rebuild_recreates_index_from_folders(store):
    a = _make(store, "alpha")
    a.update(status="completed", test_accuracy=0.9)
    _make(store, "beta")
    before = store.list()
    store.close()
    (store.root / "index.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        (store.root / f"index.sqlite{extra}").unlink(missing_ok=True)
    fresh = RunStore(store.root)
    after = fresh.list()          # rebuilds on first use when the index is missing
    assert [r["id"] for r in after] == [r["id"] for r in before]
    assert fresh.metrics(a.id, "validation")[0]["value"] in (0.5, 0.75)
    assert fresh.list(status="completed")[0]["test_accuracy"] == 0.9


def test_dead_process_reads_as_interrupted(store):
    run = _make(store, pid=2 ** 22 + 12345)     # no such pid
    assert run.status == "interrupted"
    assert store.list(status="interrupted")[0]["id"] == run.id


def test_torn_last_metrics_line_is_skipped(store):
    run = _make(store)
    with open(run.dir / "metrics.jsonl", "a") as fh:
        fh.write('{"split": "validation", "ste')          # killed mid-write
    assert len(run.events()) == 1


def test_get_by_prefix_suffix_last_and_errors(store):
    a = _make(store, "one")
    b = _make(store, "two")
    assert store.get("last").id == b.id
    assert store.get(a.id).id == a.id
    assert store.get(a.id[-4:]).id == a.id
    with pytest.raises(StoreError, match="no run"):
        store.get("nope")
    with pytest.raises(StoreError, match="matches 2 runs"):
        store.get(a.id[:8])


def test_filters_by_name_and_group(store):
    _make(store, "pre-lr1")
    _make(store, "npre-lr1")
    assert [r["name"] for r in store.list(name="pre*")] == ["pre-lr1"]
    assert len(store.list(name="*lr1")) == 2


def test_run_json_written_atomically(store):
    run = _make(store)
    run.update(status="completed")
    assert json.loads((run.dir / "run.json").read_text())["status"] == "completed"
    assert not list(run.dir.glob(".*tmp*"))


def test_concurrent_reader_sees_committed_rows(store):
    _make(store)
    other = sqlite3.connect(store.root / "index.sqlite")
    assert other.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    other.close()


def test_kind_and_lineage_are_indexed_and_rebuilt(store):
    teacher = _make(store, "teacher", task="single")
    child = _make(store, "teacher-distill", task="single", parent=teacher.id)
    grandchild = _make(store, "teacher-distill-int8", task="single", parent=child.id)
    _make(store, "senses", task="ranking")
    _make(store, "mlm", task="pretrain")
    kinds = {r["name"]: r["kind"] for r in store.list()}
    assert kinds == {"teacher": "classification", "teacher-distill": "derived", "teacher-distill-int8": "derived",
                     "senses": "ranking", "mlm": "pretraining"}
    assert [r["name"] for r in store.list(kind="derived")] == ["teacher-distill", "teacher-distill-int8"]
    assert store.children(teacher.id) == [child.id] and store.parent_of(grandchild.id) == child.id
    assert store.descendants(teacher.id) == [child.id, grandchild.id] and store.parent_of(teacher.id) is None
    # the lineage comes from the index: a rebuild from the folders restores it
    store.con.execute("UPDATE runs SET parent = NULL, kind = NULL")
    assert store.descendants(teacher.id) == []
    store.rebuild()
    assert store.descendants(teacher.id) == [child.id, grandchild.id]
    assert store.list(kind="ranking")[0]["name"] == "senses"


def test_migration_2_fills_kind_and_parent_of_an_old_index_once(store):
    from encoderlab.store import index
    teacher = _make(store, "teacher", task="single")
    child = _make(store, "small", task="single", parent=teacher.id)
    store.close()
    # an index as version 1 wrote it: no kind / parent columns
    path = store.root / "index.sqlite"
    for f in (path, path.with_name("index.sqlite-wal"), path.with_name("index.sqlite-shm")):
        f.unlink(missing_ok=True)
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(index.MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    for rid, task in ((teacher.id, "single"), (child.id, "single")):
        old.execute("INSERT INTO runs (id, name, status, config_hash, task, created) VALUES (?, 'x', 'completed', "
                    "'h', ?, '2026')", (rid, task))
    old.close()
    fresh = RunStore(store.root)
    assert fresh.con.execute("PRAGMA user_version").fetchone()[0] == len(index.MIGRATIONS)
    assert fresh.children(teacher.id) == [child.id]
    assert {r["id"]: r["kind"] for r in fresh.list()} == {teacher.id: "classification", child.id: "derived"}
    index.m002_kind_and_lineage(fresh.con, fresh.root)         # idempotent: a second pass changes nothing
    index.migrate(fresh.con, fresh.root)
    assert fresh.children(teacher.id) == [child.id]
    fresh.close()


def test_reindex_is_store_rebuild(store, capsys):
    from encoderlab.cli import main
    _make(store, "alpha")
    store.close()
    (store.root / "index.sqlite").unlink()
    for verb in (["reindex"], ["store", "rebuild"]):
        assert main(["--store", str(store.root), *verb]) == 0
        out = capsys.readouterr().out
        assert "rebuilt the index" in out and "from 1 run folders" in out
    assert [r["name"] for r in RunStore(store.root).list()] == ["alpha"]
