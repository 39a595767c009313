"""The multi-label and regression datasets of scripts/derive_wordnet.py: wordnet-multilex and
wordnet-similarity.

* wordnet-multilex: "words: definition" of a synset -> the set of lexicographer files of the
  *other* senses of its words (all parts of speech). Which other kinds of meaning do these words
  have? (a word for an animal often also names its meat, noun.food, or a kind of person,
  noun.person). Only synsets with at least one other sense; labels seen in fewer than
  MULTILEX_MIN_LABEL training rows are dropped from every row.
* wordnet-similarity: two noun definitions -> the path similarity of their synsets in the
  hypernym hierarchy, 1 / (1 + d) with d the shortest path through a common hypernym (instance
  hypernyms included; WordNet's noun hierarchy has one root, so every pair has one). The second
  synset is a random walk of 1..8 hypernym/hyponym steps from the first, or a random noun, so the
  targets spread over 0.05 .. 0.5. Synsets are dealt to the splits first: no definition occurs in
  two splits.
"""

from __future__ import annotations

import collections
import random

MULTILEX_SIZES = {"train": 8000, "validation": 1000, "test": 1000}
MULTILEX_MIN_LABEL = 40
SIMILARITY_SIZES = {"train": 6000, "validation": 1000, "test": 1000}
SIMILARITY_MAX_WALK = 8
SIMILARITY_RANDOM_SHARE = 0.25      # pairs whose second synset is any noun (mostly far apart)


def read_hypernyms(wndir) -> dict[str, list[str]]:
    """noun synset id -> ids of its hypernyms and instance hypernyms (pointers @ and @i)."""
    up = {}
    for line in (wndir / "data.noun").read_text(encoding="utf-8").splitlines():
        if line.startswith("  "):
            continue
        f = line.partition(" | ")[0].split()
        n_words = int(f[3], 16)
        at = 4 + 2 * n_words
        n_ptrs = int(f[at])
        ptrs = [f[at + 1 + 4 * i: at + 5 + 4 * i] for i in range(n_ptrs)]
        up["n" + f[0]] = ["n" + p[1] for p in ptrs if p[0] in ("@", "@i") and p[2] == "n"]
    return up


def ancestors(sid: str, up: dict, cache: dict) -> dict[str, int]:
    """Every hypernym of `sid` (itself included) with its smallest distance."""
    if sid in cache:
        return cache[sid]
    out = {sid: 0}
    for h in up.get(sid, ()):
        for a, d in ancestors(h, up, cache).items():
            if d + 1 < out.get(a, 1 << 30):
                out[a] = d + 1
    cache[sid] = out
    return out


def path_similarity(a: str, b: str, up: dict, cache: dict) -> float:
    da, db = ancestors(a, up, cache), ancestors(b, up, cache)
    return 1.0 / (1 + min(da[c] + db[c] for c in da.keys() & db.keys()))


def _deal(ids: list[str], sizes: dict, rng: random.Random) -> dict[str, list[str]]:
    """Shuffle `ids` and deal them to the splits in proportion to the split sizes."""
    ids = list(ids)
    rng.shuffle(ids)
    total, out, start = sum(sizes.values()), {}, 0
    for sp, n in sizes.items():
        k = len(ids) * n // total
        out[sp], start = ids[start:start + k], start + k
    return out


def build_multilex(synsets: list[dict], senses: dict, rng: random.Random) -> dict[str, list[dict]]:
    by_id = {s["id"]: s for s in synsets}
    seen, rows = set(), []
    for s in synsets:
        if s["definition"].lower() in seen:
            continue
        seen.add(s["definition"].lower())
        words = list(dict.fromkeys(w.lower() for w in s["words"]))
        others = {o for w in words for o in senses.get(w, ()) if o != s["id"]}
        labels = sorted({by_id[o]["lexname"] for o in others})
        if labels:
            text = ", ".join(w.replace("_", " ") for w in words) + ": " + s["definition"]
            rows.append({"id": s["id"], "text": text, "labels": labels, "lexname": s["lexname"]})
    rng.shuffle(rows)
    need = sum(MULTILEX_SIZES.values())
    rows = rows[:need]
    out, start = {}, 0
    for sp in ("train", "validation", "test"):
        out[sp], start = rows[start:start + MULTILEX_SIZES[sp]], start + MULTILEX_SIZES[sp]
    counts = collections.Counter(lab for r in out["train"] for lab in r["labels"])
    keep = {lab for lab, c in counts.items() if c >= MULTILEX_MIN_LABEL}
    for sp in out:
        out[sp] = [{**r, "labels": "|".join(lab for lab in r["labels"] if lab in keep)}
                   for r in out[sp] if any(lab in keep for lab in r["labels"])]
    return out


def build_similarity(synsets: list[dict], wndir, rng: random.Random) -> dict[str, list[dict]]:
    up = read_hypernyms(wndir)
    down = collections.defaultdict(list)
    for child, parents in up.items():
        for p in parents:
            down[p].append(child)
    nouns = {s["id"]: s for s in synsets if s["pos"] == "n"}
    by_def = collections.Counter(s["definition"].lower() for s in nouns.values())
    ids = sorted(i for i, s in nouns.items() if by_def[s["definition"].lower()] == 1)
    part = _deal(ids, SIMILARITY_SIZES, rng)
    cache: dict = {}
    out = {}
    for sp, n in SIMILARITY_SIZES.items():
        pool, members, rows, pairs = part[sp], set(part[sp]), [], set()
        while len(rows) < n:
            # the kind of pair is drawn first and kept until a pair of that kind lands inside the
            # split, so every split has the same mix (walks end outside a small split more often)
            steps = 0 if rng.random() < SIMILARITY_RANDOM_SHARE else rng.randint(1, SIMILARITY_MAX_WALK)
            while True:
                a = b = rng.choice(pool)
                if not steps:
                    b = rng.choice(pool)
                for _ in range(steps):
                    nxt = up.get(b, []) + down.get(b, [])
                    b = rng.choice(nxt) if nxt else b
                if b != a and b in members and (a, b) not in pairs and (b, a) not in pairs:
                    break
            pairs.add((a, b))
            rows.append({"id": f"{a}-{b}", "text_a": nouns[a]["definition"], "text_b": nouns[b]["definition"],
                         "similarity": round(path_similarity(a, b, up, cache), 4)})
        out[sp] = rows
    return out


def multilex_summary(splits: dict[str, list[dict]]) -> str:
    count = {sp: collections.Counter(lab for r in rows for lab in r["labels"].split("|"))
             for sp, rows in splits.items()}
    labels = sorted(set().union(*count.values()), key=lambda lab: -count["train"][lab])
    card = {sp: sum(len(r["labels"].split("|")) for r in rows) / len(rows) for sp, rows in splits.items()}
    lines = [", ".join(f"{sp} {len(rows)}" for sp, rows in splits.items()) + f" rows; {len(labels)} labels; "
             "labels per row: " + ", ".join(f"{sp} {v:.2f}" for sp, v in card.items()) + ".", "",
             "| label | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    lines += [f"| {lab} | " + " | ".join(f"{count[sp][lab]} ({count[sp][lab] / len(rows):.1%})"
                                        for sp, rows in splits.items()) + " |" for lab in labels]
    return "\n".join(lines)


def similarity_summary(splits: dict[str, list[dict]]) -> str:
    lines = ["| split | pairs | mean | std | min | max | share >= 0.2 |", "|---|---|---|---|---|---|---|"]
    for sp, rows in splits.items():
        v = [r["similarity"] for r in rows]
        m = sum(v) / len(v)
        sd = (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5
        lines.append(f"| {sp} | {len(v)} | {m:.3f} | {sd:.3f} | {min(v):.3f} | {max(v):.3f} | "
                     f"{sum(x >= 0.2 for x in v) / len(v):.1%} |")
    return "\n".join(lines)


README = """
## wordnet-multilex (multi-label)

`text`: a synset's words and definition ("bank, cant, camber: a slope in the turn of a road or
track"); `labels`: the lexicographer files of the other senses of those words (all parts of
speech), joined by `|` (`data.label_sep`); `lexname`: the synset's own file (not a target). Only
synsets with at least one other sense; repeated definitions kept once; labels seen in fewer than
{min_label} training rows dropped (rows left without a label dropped). Random splits.

{table}

## wordnet-similarity (regression, text pair)

`text_a`, `text_b`: the definitions of two noun synsets; `similarity`: their path similarity
1 / (1 + d), d = the shortest hypernym path through a common ancestor (instance hypernyms
included). The second synset is {random_share:.0%} of the time a random noun, otherwise a random
walk of 1..{max_walk} hypernym/hyponym steps from the first. Noun synsets (with a unique
definition) are dealt to the splits first, so no definition occurs in two splits.

{sim_table}
"""


def readme(multilex, similarity) -> str:
    return README.format(min_label=MULTILEX_MIN_LABEL, table=multilex_summary(multilex),
                         random_share=SIMILARITY_RANDOM_SHARE, max_walk=SIMILARITY_MAX_WALK,
                         sim_table=similarity_summary(similarity))


MANIFEST = {
    "wordnet-multilex": {"task": "multilabel", "text": "text", "label": "labels", "description":
                         "WordNet 3.0 words + definition -> the lexicographer files of the words' "
                         "other senses (multi-label)"},
    "wordnet-similarity": {"task": "regression", "text": "text_a", "text_pair": "text_b",
                           "label": "similarity", "description":
                           "WordNet 3.0 two noun definitions -> path similarity of their synsets "
                           "(regression, 0.05 .. 0.5)"}}
