"""The second held-out split of the WordNet ranking data (builtin:wordnet-senses-b / wordnet-linking-b,
scripts/wordnet_ranking_b.py): it loads in both candidate modes, its domains are held out as stated,
no context or word is in two splits, and the script remakes the shipped files byte for byte."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from encoderlab import config as C
from encoderlab.data import builtin
from encoderlab.data.ranking import load_ranking
from encoderlab.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = {"train": {"modifiers", "doing", "events", "communication", "mind"},
           "validation": {"acts-states"}, "test": {"people", "things"}}
SIZES = {"train": 4000, "validation": 500, "test": 1000}


def shipped_rows() -> dict[str, list[dict]]:
    spec = builtin.get("wordnet-senses-b")
    with_rows = {}
    for sp, path in spec.files.items():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            with_rows[sp] = [json.loads(line) for line in fh]
    return with_rows


def test_loads_as_lists_and_against_the_dictionary():
    senses = load_ranking(C.DataConfig(source="builtin:wordnet-senses-b"), C.RankingConfig())
    assert senses.candidates == "list" and senses.dictionary is None
    assert {sp: len(getattr(senses, sp)) for sp in SIZES} == SIZES
    for sp, domains in DOMAINS.items():
        assert set(getattr(senses, sp).domains) == domains
    linking = load_ranking(C.DataConfig(source="builtin:wordnet-linking-b", max_eval=50), C.RankingConfig())
    assert linking.candidates == "dictionary" and len(linking.dictionary) > 100000
    assert len(linking.test) == 50 and set(linking.test.domains) == DOMAINS["test"]
    # the existing dictionary, not a copy
    assert builtin.get("wordnet-linking-b").dictionary == builtin.get("wordnet-linking").dictionary


def test_domains_words_and_ids_are_disjoint():
    rows = shipped_rows()
    assert {sp: len(r) for sp, r in rows.items()} == SIZES
    for sp, domains in DOMAINS.items():
        assert {r["domain"] for r in rows[sp]} == domains
    assert sum(r["domain"] == "people" for r in rows["test"]) == 500
    ids = [r["id"] for sp in rows for r in rows[sp]]
    assert len(ids) == len(set(ids))
    words = {sp: {r["word"] for r in rs} for sp, rs in rows.items()}
    assert words["train"].isdisjoint(words["validation"] | words["test"])
    assert words["validation"].isdisjoint(words["test"])
    # every context comes unchanged from wordnet-senses (its training, validation or test file)
    a = builtin.get("wordnet-senses-full").files
    with gzip.open(a["train"], "rt", encoding="utf-8") as fh:
        source = {json.loads(line)["id"]: line.strip() for line in fh}
    sample = rows["test"][:20] + rows["validation"][:20]
    assert all(json.dumps(r, ensure_ascii=False) == source[r["id"]] for r in sample)


def test_the_error_lists_every_ranking_builtin():
    with pytest.raises(DataError) as e:
        load_ranking(C.DataConfig(source="builtin:wordnet-lexname"), C.RankingConfig())
    for name in ("wordnet-senses", "wordnet-senses-full", "wordnet-linking", "wordnet-senses-b",
                 "wordnet-linking-b"):
        assert f"builtin:{name}," in str(e.value) + ","


def test_script_remakes_the_shipped_files(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "wordnet_ranking_b.py"),
                           "--src", str(builtin.ROOT), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for sp, path in builtin.get("wordnet-senses-b").files.items():
        assert (tmp_path / "wordnet-senses-b" / f"{sp}.jsonl.gz").read_bytes() == path.read_bytes()
    assert ((tmp_path / "README-wordnet-senses-b.md").read_text()
            == (builtin.ROOT / "README-wordnet-senses-b.md").read_text())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    shipped = json.loads((builtin.ROOT / "manifest.json").read_text())
    assert {n: manifest[n] for n in ("wordnet-senses-b", "wordnet-linking-b")} == \
        {n: shipped[n] for n in ("wordnet-senses-b", "wordnet-linking-b")}
