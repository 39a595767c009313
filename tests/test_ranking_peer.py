"""bench/ranking_peer.py on a tiny slice: sentence-transformers' own trainers on encoderlab's ranking
splits produce one table row each, with metrics from encoderlab's metric function, beside a stored run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from encoderlab import config as C

pytest.importorskip("sentence_transformers")
pytest.importorskip("datasets")       # ST's trainers need it (not a dependency of encoderlab itself)

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("ranking_peer", ROOT / "bench" / "ranking_peer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def read_table(path: Path) -> list[dict]:
    lines = [x for x in path.read_text().splitlines() if x.startswith("|")]
    head = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in x.strip("|").split("|")))) for x in lines[2:]]


def test_render_marks_the_mention_as_a_plain_user_would():
    peer = load_script()
    assert peer.render("We finally ", "got", " him", "brackets") == "We finally [got] him"
    assert peer.render("We finally ", "got", " him", "quotes") == 'We finally "got" him'
    assert peer.render("We finally ", "got", " him", "plain") == "We finally got him"


def test_sampled_keeps_the_gold_first_and_k_candidates():
    import numpy as np
    peer = load_script()
    rng = np.random.default_rng(0)
    pick = peer.sampled(9, 5, 4, rng)
    assert pick[0] == 5 and len(pick) == len(set(pick)) == 4
    assert sorted(peer.sampled(3, 1, 0, rng)) == [0, 1, 2] and peer.sampled(1, 0, 4, rng) == [0]


def test_main_trains_both_peers_and_prints_a_stored_run_beside_them(tmp_path, store):
    from encoderlab.train.ranking import run
    cfg = C.from_dict(C.ExperimentConfig, {
        "name": "first-listed", "data": {"source": "builtin:wordnet-senses", "max_train": 16, "max_eval": 20},
        "model": {"path": "builtin:minilm-l6"}, "train": {"threads": 1}, "ranking": {"mode": "first"}})
    stored = run(cfg, store, progress=False)
    assert stored.status == "completed"
    out = tmp_path / "peer.md"
    peer = load_script()
    assert peer.main(["--max-train", "16", "--max-eval", "20", "--epochs", "1", "--batch-size", "4",
                      "--threads", "1", "--hard-negatives", "--store", str(store.root), "--runs", "first-listed",
                      "--out", str(out)]) == 0
    text = out.read_text()
    assert "python bench/ranking_peer.py --max-train 16" in text and "CPU:" in text
    rows = read_table(out)
    assert [r["row"] for r in rows] == ["zero-shot", "st-cross", "st-bi", "encoderlab first-listed"]
    metrics = [k for k in rows[0] if k.endswith(("acc@1", "MRR"))]
    assert {"test communication acc@1", "test mind acc@1", "validation events acc@1", "test MRR"} <= set(metrics)
    for r in rows[:3]:
        assert all(0 <= float(r[k]) <= 1 for k in metrics)
    assert float(rows[1]["train s"]) > 0 and int(rows[1]["steps"]) == 16 * 4 // 16   # 16 contexts x k=4, 16 pairs
    assert rows[3]["test acc@1"] and 0 <= float(rows[3]["test acc@1"]) <= 1
    assert float(rows[3]["test mind acc@1"]) >= 0


def test_wall_budget_stops_training_after_the_step_that_spends_it():
    from types import SimpleNamespace
    peer = load_script()
    cb, state = peer.wall_budget(1e-9), SimpleNamespace(global_step=3)
    control = SimpleNamespace(should_training_stop=False)
    cb.on_train_begin(None, state, control)
    cb.on_step_end(None, state, control)
    assert control.should_training_stop and cb.stopped and cb.steps == 3
    free, control = peer.wall_budget(0), SimpleNamespace(should_training_stop=False)
    free.on_train_begin(None, state, control)
    free.on_step_end(None, state, control)
    assert not control.should_training_stop and not free.stopped
