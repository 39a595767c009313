"""Tokenizers and ID vocabularies trained on real WordNet text: load with AutoTokenizer, keep the
special tokens, apply the unknown-ID policy, and name file/row/field for bad corpora."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from conftest import real_rows
from encoderlab.cli import main
from encoderlab.data.corpus import read_corpus
from encoderlab.data.dataset import Split
from encoderlab.encode import vocab as V
from encoderlab.encode.text import encode_split
from encoderlab.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def glosses(tmp_path_factory):
    """400 real WordNet definitions, one per line."""
    path = tmp_path_factory.mktemp("corpus") / "glosses.txt"
    path.write_text("\n".join(r["text"] for r in real_rows("wordnet-lexname", "train", n=400)) + "\n")
    return path


def to_ids(text: str, table: dict) -> str:
    return " ".join(str(table.setdefault(w, 100 + len(table))) for w in text.lower().split())


@pytest.fixture(scope="module")
def id_corpus(tmp_path_factory):
    """The same definitions with every word replaced by an integer ID (a tsv with a `tokens` column)."""
    table: dict[str, int] = {}
    rows = real_rows("wordnet-lexname", "train", n=400)
    path = tmp_path_factory.mktemp("ids") / "ids.tsv"
    pd.DataFrame({"tokens": [to_ids(r["text"], table) for r in rows], "label": [r["label"] for r in rows]}) \
        .to_csv(path, sep="\t", index=False)
    return path


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_subword_tokenizers_round_trip_through_autotokenizer(kind, glosses, tmp_path):
    tok = V.train(read_corpus(glosses), kind, vocab_size=600)
    V.save(tok, tmp_path / kind)
    loaded = AutoTokenizer.from_pretrained(tmp_path / kind)
    assert len(loaded) == 600
    assert loaded.convert_ids_to_tokens([0, 1, 2, 3, 4]) == list(V.SPECIALS)
    specials = (loaded.pad_token, loaded.unk_token, loaded.cls_token, loaded.sep_token, loaded.mask_token)
    assert specials == V.SPECIALS
    enc = loaded("a domestic animal", "any of various animals", return_token_type_ids=True)
    ids, types = enc["input_ids"], enc["token_type_ids"]
    assert ids[0] == loaded.cls_token_id and ids[-1] == loaded.sep_token_id and ids.count(loaded.sep_token_id) == 2
    assert types[0] == 0 and types[-1] == 1
    assert loaded.unk_token_id not in loaded("the animal of a genus")["input_ids"]   # common words are known


def test_id_vocabulary_orders_by_frequency_and_maps_rare_ids_to_unk(id_corpus, tmp_path):
    corpus = read_corpus(id_corpus, text="tokens")
    tok = V.train(corpus, "ids", min_frequency=2)
    V.save(tok, tmp_path / "v")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "v")
    counts = pd.Series(" ".join(corpus.sentences).split()).value_counts()
    assert len(loaded) == 5 + int((counts >= 2).sum())
    assert loaded.convert_ids_to_tokens(5) == counts.index[0]          # most frequent ID first
    rare = counts.index[counts == 1][0]
    assert loaded(f"{counts.index[0]} {rare}", add_special_tokens=False)["input_ids"] == [5, loaded.unk_token_id]
    assert V.unknown_policy(loaded) == "unk"
    capped = V.train(corpus, "ids", min_frequency=1, vocab_size=50)
    assert len(capped) == 50


def test_id_vocabulary_with_error_policy_names_the_unknown_id(id_corpus, tmp_path):
    corpus = read_corpus(id_corpus, text="tokens")
    tok = V.train(corpus, "ids", min_frequency=1, unknown_ids="error")
    V.save(tok, tmp_path / "v")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "v")
    assert V.unknown_policy(loaded) == "error"
    good = Split("train", corpus.sentences[:5], None, np.zeros(5, dtype=np.int64), str(id_corpus))
    assert len(encode_split(loaded, good, 64, "longest_first")) == 5
    bad = Split("test", [corpus.sentences[0], corpus.sentences[1] + " 999999"], None, np.zeros(2, dtype=np.int64),
                "new.tsv")
    with pytest.raises(DataError, match=r"file new.tsv: ID '999999' .* unknown_ids is 'error'"):
        encode_split(loaded, bad, 64, "longest_first")
    # the same text under the "unk" policy is encoded with [UNK]
    unk = V.train(corpus, "ids", min_frequency=1)
    assert unk.unk_token_id in encode_split(unk, bad, 64, "longest_first").ids[1]


def test_error_policy_that_would_reject_its_own_corpus_is_refused(id_corpus):
    with pytest.raises(ConfigError, match="min_frequency 2"):
        V.train(read_corpus(id_corpus, text="tokens"), "ids", min_frequency=2, unknown_ids="error")
    with pytest.raises(ConfigError, match="ID vocabularies"):
        V.train(read_corpus(id_corpus, text="tokens"), "wordpiece", unknown_ids="error")


def test_non_integer_token_names_file_row_and_field(tmp_path):
    path = tmp_path / "ids.csv"
    pd.DataFrame({"tokens": ["1 2 3", "4 5 6", "7 eight 9"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"file .*ids.csv, row 3, field 'tokens': token 'eight' is not an integer ID"):
        V.train(read_corpus(path, text="tokens"), "ids")
    txt = tmp_path / "ids.txt"
    txt.write_text("1 2 3\n\n4 5 x6\n")
    with pytest.raises(DataError, match=r"file .*ids.txt, row 3: token 'x6'"):
        V.train(read_corpus(txt), "ids")


def test_bad_corpora_are_clear_errors(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(DataError, match="blank.txt: the corpus has no text"):
        read_corpus(blank)
    table = tmp_path / "t.csv"
    pd.DataFrame({"sentence": ["a b"]}).to_csv(table, index=False)
    with pytest.raises(DataError, match=r"field 'text': column 'text' not found \(columns: sentence\)"):
        read_corpus(table)
    with pytest.raises(DataError, match="does not exist"):
        read_corpus(tmp_path / "missing.txt")


def test_corpus_documents_from_blank_lines_and_table_pairs(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("a b\nc d\n\n\ne f\n")
    c = read_corpus(txt)
    assert c.sentences == ["a b", "c d", "e f"] and c.doc.tolist() == [0, 0, 1] and c.rows.tolist() == [1, 2, 5]
    table = tmp_path / "p.jsonl"
    table.write_text('{"a": "x y", "b": "z"}\n{"a": "u", "b": ""}\n')
    p = read_corpus(table, text="a", text_pair="b")
    assert p.sentences == ["x y", "z", "u"] and p.doc.tolist() == [0, 0, 1]
    assert p.where(1) == {"file": str(table), "row": 1, "field": "b"}


def test_cli_tokenizer_train(glosses, id_corpus, tmp_path, capsys):
    out = tmp_path / "wp"
    assert main(["tokenizer", "train", str(glosses), "--kind", "wordpiece", "--vocab-size", "500", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "trained a WordPiece tokenizer: 500 tokens" in text and f'model.tokenizer = "{out}"' in text
    assert AutoTokenizer.from_pretrained(out).mask_token == "[MASK]"
    assert main(["tokenizer", "train", str(id_corpus), "--text", "tokens", "--kind", "ids", "--min-frequency", "1",
                 "--unknown-ids", "error", "-o", str(tmp_path / "ids"), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "ids" and d["unknown_ids"] == "error" and d["unk_share"] == 0.0
    # a bad corpus is one clear line, exit code 2
    assert main(["tokenizer", "train", str(glosses), "--kind", "ids", "-o", str(tmp_path / "x")]) == 2
    assert "is not an integer ID" in capsys.readouterr().err
