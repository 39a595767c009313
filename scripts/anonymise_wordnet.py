"""Anonymise encoderlab's builtin WordNet data: every word becomes an integer ID.

Run from the repository root (takes a few seconds):

    python scripts/anonymise_wordnet.py --out examples/data/anon

Writes (byte-for-byte reproducible: fixed mapping, inputs in file order, gzip mtime 0)

    lexname-{train,validation,test}.jsonl.gz   builtin:wordnet-lexname with `text` as IDs (labels kept)
    corpus.txt.gz                              the pretraining corpus: one document per synset, its
                                               definition then its usage example; blank line between
    README.md                                  what the files hold, with counts

Words are lower-cased runs of letters/digits (with inner ' - . kept) and single punctuation marks.
Each distinct word gets an ID from 1000 upwards in the order of a salted SHA-256 of the word, so
the IDs say nothing about spelling or frequency; the mapping is fixed by the salt and the data.

The corpus is what a user with anonymised data would pretrain on: the lexname training
definitions plus definitions and usage examples from builtin:wordnet-usage. It leaves out every
synset of the lexname validation and test splits and every sentence equal to one of their
definitions, so pretraining never sees the text the fine-tuned models are scored on.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ROOT / "encoderlab" / "data" / "builtin"
SALT = b"encoderlab-anon-v1:"
FIRST_ID = 1000
WORD = re.compile(r"[^\W_]+(?:['.\-][^\W_]+)*|[^\w\s]", re.UNICODE)
SPLITS = ("train", "validation", "test")


def read(name: str, split: str) -> list[dict]:
    with gzip.open(BUILTIN / name / f"{split}.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def mapping(texts) -> dict[str, int]:
    vocab = {w for t in texts for w in words(t)}
    order = sorted(vocab, key=lambda w: hashlib.sha256(SALT + w.encode()).hexdigest())
    return {w: FIRST_ID + i for i, w in enumerate(order)}


def write_gz(path: Path, text: str) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(text.encode("utf-8"))
    path.write_bytes(buf.getvalue())


def derive(out: Path) -> dict:
    """Write the anonymised files to `out`; returns the counts shown in README.md."""
    lex = {s: read("wordnet-lexname", s) for s in SPLITS}
    usage = [r for s in SPLITS for r in read("wordnet-usage", s)]
    ids = mapping([r["text"] for s in SPLITS for r in lex[s]] + [r[k] for r in usage for k in ("text_a", "text_b")])

    def anon(text: str) -> str:
        return " ".join(str(ids[w]) for w in words(text))

    out.mkdir(parents=True, exist_ok=True)
    counts = {"ids": len(ids)}
    for s in SPLITS:
        rows = [{"text": anon(r["text"]), "label": r["label"]} for r in lex[s]]
        rows = [r for r in rows if r["text"]]
        write_gz(out / f"lexname-{s}.jsonl.gz", "".join(json.dumps(r) + "\n" for r in rows))
        counts[f"lexname_{s}"] = len(rows)

    # pretraining corpus: synset -> [definition, usage examples ...], held-out synsets left out
    held_ids = {r["id"] for s in ("validation", "test") for r in lex[s]}
    held_text = {anon(r["text"]) for s in ("validation", "test") for r in lex[s]}
    docs: dict[str, list[str]] = {r["id"]: [r["text"]] for r in lex["train"]}
    for r in usage:
        if r["label"] != "match":
            continue
        synset = r["id"].split("-")[0]
        doc = docs.setdefault(synset, [r["text_b"]])
        if r["text_a"] not in doc:
            doc.append(r["text_a"])
    lines, sizes = [], []
    for synset in sorted(docs):
        if synset in held_ids:
            continue
        sents = [a for a in (anon(t) for t in docs[synset]) if a and a not in held_text]
        if sents:
            lines.extend(sents + [""])
            sizes.append(len(sents))
    write_gz(out / "corpus.txt.gz", "\n".join(lines))
    counts.update(corpus_documents=len(sizes), corpus_lines=sum(sizes),
                  corpus_tokens=sum(len(x.split()) for x in lines),
                  corpus_two_line_documents=sum(n > 1 for n in sizes))
    (out / "README.md").write_text(README.format(**counts))
    return counts


README = """# Anonymised WordNet (derived, not committed)

Written by `python scripts/anonymise_wordnet.py --out examples/data/anon` from encoderlab's builtin
WordNet 3.0 data (licence: `encoderlab/data/builtin/LICENSE-WordNet.txt`). Every word and
punctuation mark is replaced by an integer ID ({ids:,} distinct IDs, a fixed salted-hash mapping).

| file | rows |
|---|---|
| `lexname-train.jsonl.gz` | {lexname_train:,} definitions (as IDs) -> lexicographer file, 45 classes |
| `lexname-validation.jsonl.gz` | {lexname_validation:,} |
| `lexname-test.jsonl.gz` | {lexname_test:,} |
| `corpus.txt.gz` | {corpus_lines:,} lines ({corpus_tokens:,} IDs) in {corpus_documents:,} documents, one per synset: its definition, then its usage example ({corpus_two_line_documents:,} have one) |

The corpus holds no synset of the lexname validation/test splits and no sentence equal to one of
their definitions.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "examples" / "data" / "anon"), help="output folder")
    counts = derive(Path(ap.parse_args().out))
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
