"""Unlabelled text for tokenizer training and pretraining: sentences grouped into documents.

    corpus = read_corpus("corpus.txt")                      # one sentence per line, blank line = new document
    corpus = read_corpus("docs.jsonl", text="a", text_pair="b")   # one document per row: a (+ b)

Every sentence keeps its file and row (1-based line of a text file, data row of a table), so
later checks (an unknown ID, a non-integer token) can name where it came from."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoderlab.data.columns import require_column, text_values
from encoderlab.data.readers import read_table
from encoderlab.errors import DataError

TEXT_SUFFIXES = (".txt", ".text")


@dataclass
class Corpus:
    sentences: list[str]
    doc: np.ndarray        # (N,) document index of each sentence, non-decreasing
    rows: np.ndarray       # (N,) 1-based line / row in `files[file_of[i]]`
    file_of: np.ndarray    # (N,) index into `files`
    files: list[str]
    fields: list[str]      # (N,) column each sentence came from ("" for text files)

    def __len__(self) -> int:
        return len(self.sentences)

    def where(self, i: int) -> dict:
        """file / row / field of sentence i, as DataError keywords."""
        return {"file": self.files[self.file_of[i]], "row": int(self.rows[i]), "field": self.fields[i] or None}


def is_text_file(path: str | Path) -> bool:
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() not in (".gz",)]
    return bool(suffixes) and suffixes[-1] in TEXT_SUFFIXES


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataError("file does not exist", file=str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            return fh.read().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason}); re-save it as UTF-8", file=str(path)) from None


def read_corpus(paths: str | Path | list, text: str = "text", text_pair: str = "",
                fmt: str = "auto") -> Corpus:
    """Sentences and their documents from text files and/or tables (see the module doc)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    sentences, doc, rows, file_of, fields = [], [], [], [], []
    d = 0
    for f, path in enumerate(paths):
        path = Path(path)
        if is_text_file(path):
            open_doc = False
            for line_no, line in enumerate(_read_lines(path), 1):
                line = line.strip()
                if not line:
                    d += open_doc     # a blank line closes the current document
                    open_doc = False
                    continue
                sentences.append(line), doc.append(d), rows.append(line_no), file_of.append(f)
                fields.append("")
                open_doc = True
            d += open_doc
            continue
        df = read_table(path, fmt)
        firsts = text_values(require_column(df, text, str(path), "data.text"), str(path), text)
        seconds = text_values(require_column(df, text_pair, str(path), "data.text_pair"), str(path), text_pair,
                         allow_empty=True) if text_pair else [""] * len(firsts)
        for r, (a, b) in enumerate(zip(firsts, seconds), 1):
            for s, column in ((a, text), (b, text_pair)):
                if s.strip():
                    sentences.append(s.strip()), doc.append(d), rows.append(r), file_of.append(f)
                    fields.append(column)
            d += 1
    if not sentences:
        raise DataError("the corpus has no text (only blank lines)", file=", ".join(map(str, paths)))
    return Corpus(sentences, np.asarray(doc, dtype=np.int64), np.asarray(rows, dtype=np.int64),
                  np.asarray(file_of, dtype=np.int64), [str(p) for p in paths], fields)


def duplicate_share(sentences: list[str]) -> tuple[float, str, int]:
    """(share of sentences that repeat an earlier one, the most repeated sentence, its count)."""
    from collections import Counter
    counts = Counter(sentences)
    top, n = counts.most_common(1)[0]
    return 1.0 - len(counts) / max(len(sentences), 1), top, n
