"""A second held-out split of the WordNet ranking data: wordnet-senses-b and wordnet-linking-b.

wordnet-senses holds out events (validation) and communication + mind (test). A gain measured there
could be a property of those domains, so this split holds out other ones: test = people + things,
validation = acts-states, train = the rest (modifiers, doing, events, communication, mind). It is
made from the shipped files of wordnet-senses (train-full, validation, test: every context there
is), so no WordNet install is needed, and it is deterministic:

    python scripts/wordnet_ranking_b.py --out encoderlab/data/builtin

writes wordnet-senses-b/{train,validation,test}.jsonl.gz, README-wordnet-senses-b.md and the two
manifest entries (wordnet-linking-b points at the existing wordnet-linking dictionary).

Words are held out too: a word drawn for test or validation has no context in any other split, so
a model cannot recall a word's senses from training (words span domains: a context's domain is the
domain of its gold synset).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import random
from pathlib import Path

from derive_wordnet import write_jsonl_gz

import wordnet_ranking as WR

SEED = 20260101
SPLIT_DOMAINS = {"train": ("modifiers", "doing", "events", "communication", "mind"),
                 "validation": ("acts-states",), "test": ("people", "things")}
HELD_PER_DOMAIN = 500       # contexts per held-out domain
TRAIN_SIZE = 4000
SOURCE_FILES = ("train-full", "validation", "test")   # every context of wordnet-senses
DICTIONARY = "wordnet-linking/dictionary.jsonl.gz"


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def contexts_by_domain(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """domain -> word -> its contexts, in file order (the A split already caps a word at 4 per domain)."""
    out = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        out[r["domain"]][r["word"]].append(r)
    return out


def draw_whole_words(words: dict[str, list[dict]], size: int, banned: set[str],
                     rng: random.Random) -> list[dict]:
    """`size` contexts made of whole words (all of a word's contexts or none), words in seeded
    order, skipping banned words and any word that would overshoot `size`."""
    order = sorted(w for w in words if w not in banned)
    rng.shuffle(order)
    rows: list[dict] = []
    for w in order:
        if len(rows) + len(words[w]) <= size:
            rows += words[w]
        if len(rows) == size:
            return rows
    raise ValueError(f"only {len(rows)} contexts of whole words available, {size} wanted")


def build_split_b(rows: list[dict], rng: random.Random) -> dict[str, list[dict]]:
    """Test first (people, things), then validation (acts-states) from words not in test, then
    train: shuffled contexts of the training domains whose word is in neither."""
    by_domain = contexts_by_domain(rows)
    held_words: set[str] = set()
    out: dict[str, list[dict]] = {}
    for sp in ("test", "validation"):
        # a word may occur in both test domains; it is drawn for one and banned for the other,
        # keeping each domain at exactly HELD_PER_DOMAIN (and the test words disjoint from validation)
        out[sp] = []
        for d in SPLIT_DOMAINS[sp]:
            drawn = draw_whole_words(by_domain[d], HELD_PER_DOMAIN, held_words, rng)
            held_words |= {r["word"] for r in drawn}
            out[sp] += drawn
    train = [r for d in SPLIT_DOMAINS["train"] for w in sorted(by_domain[d]) for r in by_domain[d][w]
             if w not in held_words]
    rng.shuffle(train)
    if len(train) < TRAIN_SIZE:
        raise ValueError(f"only {len(train)} training contexts, {TRAIN_SIZE} wanted")
    out["train"] = train[:TRAIN_SIZE]
    return {sp: out[sp] for sp in ("train", "validation", "test")}


def split_table(splits: dict[str, list[dict]], dictionary: list[dict]) -> str:
    """Per split: domains, contexts, mean candidates, gold listed first, dictionary entries (the
    columns of docs/ranking-study.md's Data table), then the same per domain."""
    dict_size = collections.Counter(e["domain"] for e in dictionary)
    lines = ["| split | domains | contexts | candidates per context (mean) | gold listed first | "
             "dictionary entries per domain |", "|---|---|---:|---:|---:|---|"]
    for sp, rows in splits.items():
        ks = [len(r["candidates"]) for r in rows]
        domains = SPLIT_DOMAINS[sp]
        lines.append(f"| {sp} | {', '.join(domains)} | {len(rows):,} | {sum(ks) / len(ks):.1f} | "
                     f"{sum(r['label'] == 0 for r in rows) / len(rows):.1%} | "
                     f"{' / '.join(f'{dict_size[d]:,}' for d in domains)} |")
    return "\n".join(lines) + "\n\nPer domain:\n\n" + WR.ranking_summary(splits, dictionary, SPLIT_DOMAINS)


README = """# wordnet-senses-b and wordnet-linking-b (ranking, a second held-out split)

The contexts of `wordnet-senses` (all of them: its `train-full`, `validation` and `test` files),
split again so that other domains are held out: a gain must hold on two disjoint groups of test
domains. Test = {test} ({per_domain} contexts each), validation = {validation} ({per_domain}),
train = {n_train:,} contexts of {train} (the A split's validation and test domains are training
domains here). `wordnet-linking-b` links the same contexts against the `wordnet-linking`
dictionary (every synset of the context's domain).

{table}

Made by `python scripts/wordnet_ranking_b.py --out encoderlab/data/builtin` from the shipped
wordnet-senses files (no WordNet install), deterministically (seed {seed}): test words are drawn
first, whole words in a seeded order (all of a word's contexts in the domain, or none) until each
test domain has exactly {per_domain}; then validation the same way from words not in test; then
train is a seeded shuffle of the training domains' contexts whose word is in neither, cut to
{n_train:,}. So no context id and no word (`word`, the lemma) is in two splits; {excluded:,}
training-domain contexts were left out because their word is held out (of {pool:,}). The held-out
domains' remaining contexts are unused.
"""

MANIFEST = {
    "wordnet-senses-b": {"task": "ranking", "text": "context", "label": "label", "description":
                         "wordnet-senses re-split: test people + things, validation acts-states, "
                         "train the other domains; no word in two splits"},
    "wordnet-linking-b": {"task": "ranking", "text": "context", "label": "gold", "description":
                          "the wordnet-senses-b contexts linked against all synsets of their domain "
                          "(the wordnet-linking dictionary)"}}


def readme(splits: dict[str, list[dict]], dictionary: list[dict], pool: int, excluded: int) -> str:
    return README.format(
        test=" + ".join(SPLIT_DOMAINS["test"]), validation=", ".join(SPLIT_DOMAINS["validation"]),
        train=", ".join(SPLIT_DOMAINS["train"]), per_domain=HELD_PER_DOMAIN, n_train=TRAIN_SIZE,
        table=split_table(splits, dictionary), seed=SEED, pool=pool, excluded=excluded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("encoderlab/data/builtin"),
                        help="the builtin folder holding wordnet-senses/ and wordnet-linking/")
    parser.add_argument("--out", type=Path, default=Path("encoderlab/data/builtin"))
    args = parser.parse_args()

    rows = [r for f in SOURCE_FILES for r in read_jsonl_gz(args.src / "wordnet-senses" / f"{f}.jsonl.gz")]
    splits = build_split_b(rows, random.Random(SEED))
    for sp, split_rows in splits.items():
        write_jsonl_gz(args.out / "wordnet-senses-b" / f"{sp}.jsonl.gz", split_rows)

    held = {r["word"] for sp in ("validation", "test") for r in splits[sp]}
    pool = [r for r in rows if r["domain"] in SPLIT_DOMAINS["train"]]
    dictionary = read_jsonl_gz(args.src / DICTIONARY)
    (args.out / "README-wordnet-senses-b.md").write_text(
        readme(splits, dictionary, len(pool), sum(r["word"] in held for r in pool)), encoding="utf-8")

    path = args.out / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    for name, entry in MANIFEST.items():
        manifest[name] = {**entry, "splits": {sp: f"wordnet-senses-b/{sp}.jsonl.gz" for sp in splits},
                          "sizes": {sp: len(r) for sp, r in splits.items()}, "license": "LICENSE-WordNet.txt"}
    manifest["wordnet-linking-b"]["dictionary"] = DICTIONARY   # the existing file, not a copy
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print("wordnet-senses-b", {sp: len(r) for sp, r in splits.items()})


if __name__ == "__main__":
    main()
