"""The ranking datasets of scripts/derive_wordnet.py: wordnet-senses and wordnet-linking.

A context is a WordNet usage example with the target word marked (context_left, mention,
context_right). wordnet-senses ranks the definitions of every sense of that word (all parts of
speech); wordnet-linking links the same contexts against the dictionary of all synsets of the
context's domain. Domains are groups of lexicographer files; whole domains are held out for
validation and test (zero-shot, as in entity linking across "worlds").
"""

from __future__ import annotations

import collections
import random
import re

# Every lexicographer file belongs to exactly one domain.
DOMAINS = {
    "modifiers": "adj.all adj.pert adj.ppl adv.all",
    "acts-states": "noun.Tops noun.act noun.attribute noun.state noun.relation noun.shape noun.quantity",
    "things": "noun.artifact noun.object noun.substance noun.location noun.body noun.animal noun.plant "
              "noun.food",
    "people": "noun.person noun.group noun.possession verb.social verb.competition verb.possession",
    "doing": "verb.change verb.contact verb.creation verb.body verb.consumption verb.weather",
    "events": "verb.motion verb.stative noun.event noun.time noun.process noun.phenomenon",
    "communication": "noun.communication verb.communication",
    "mind": "noun.cognition noun.feeling noun.motive verb.cognition verb.emotion verb.perception",
}
DOMAIN_OF = {lex: d for d, lexes in DOMAINS.items() for lex in lexes.split()}
SPLIT_DOMAINS = {"train": ("modifiers", "acts-states", "things", "people", "doing"),
                 "validation": ("events",), "test": ("communication", "mind")}
# contexts per split; per held-out domain at most half of the split (the rest of the domain unused)
SENSES_SIZES = {"train": 4000, "validation": 500, "test": 1000}
SENSES_MAX_PER_WORD = 4  # keeps very polysemous words (break, take, ...) from dominating


def title(s: dict) -> str:
    return ", ".join(dict.fromkeys(w.replace("_", " ") for w in s["words"]))


def candidate_text(s: dict) -> str:
    return f"{title(s)}: {s['definition']}"


def find_span(forms: set[str], sentence: str) -> tuple[int, int] | None:
    """Character span of the first occurrence of any form (longest forms tried first)."""
    alternatives = "|".join(r"[\s-]+".join(map(re.escape, f.split()))
                            for f in sorted(forms, key=len, reverse=True))
    m = re.search(rf"(?<![\w-])(?:{alternatives})(?![\w-])", sentence, re.I)
    return None if m is None else (m.start(), m.end())


def read_senses(wndir, by_id: dict, pos_files: dict) -> tuple[dict, dict]:
    """lemma -> synset ids of every part of speech (index order), (pos, base) -> irregular forms."""
    senses, irregular = collections.defaultdict(list), collections.defaultdict(set)
    for pos, name in pos_files.items():
        for line in (wndir / f"index.{name}").read_text(encoding="utf-8").splitlines():
            if not line.startswith("  "):
                f = line.split()
                senses[f[0]] += [pos + off for off in f[-int(f[2]):] if pos + off in by_id]
        for line in (wndir / f"{name}.exc").read_text(encoding="utf-8").splitlines():
            inflected, *bases = line.replace("_", " ").split(" ")
            for base in bases:
                irregular[pos, base].add(inflected)
    return senses, irregular


def build_ranking(synsets: list[dict], wndir, pos_files: dict, word_forms, rng: random.Random
                  ) -> tuple[dict[str, list[dict]], list[dict]]:
    """(contexts per split, dictionary). A context's candidates are the distinct definitions of
    every sense of its word; `label` indexes the gold one, `gold` is its synset id."""
    by_id = {s["id"]: s for s in synsets}
    senses, irregular = read_senses(wndir, by_id, pos_files)
    by_domain = collections.defaultdict(lambda: collections.defaultdict(list))
    seen = set()
    for s in synsets:
        domain = DOMAIN_OF[s["lexname"]]
        for k in rng.sample(range(len(s["examples"])), len(s["examples"])):
            example = s["examples"][k]
            if example.lower() in seen:
                continue
            row = None
            for word in dict.fromkeys(w.lower() for w in s["words"]):
                ids, texts = [], set()
                for o in senses.get(word, ()):
                    t = by_id[o]["definition"].lower()
                    if o not in ids and (t not in texts or o == s["id"]):
                        ids.append(o)
                        texts.add(t)
                if s["id"] not in ids or len(ids) < 2:
                    continue
                lemma = word.replace("_", " ")
                span = find_span(word_forms(lemma, s["pos"], irregular), example)
                if span is None:
                    continue
                row = {"id": f"{s['id']}-{k}", "word": lemma, "domain": domain,
                       "context_left": example[:span[0]], "mention": example[span[0]:span[1]],
                       "context_right": example[span[1]:],
                       "candidates": [{"id": o, "text": candidate_text(by_id[o])} for o in ids],
                       "label": ids.index(s["id"]), "gold": s["id"]}
                break
            if row is not None:
                seen.add(example.lower())
                by_domain[domain][lemma].append(row)
                break  # one example per synset

    out = {}
    for sp, domains in SPLIT_DOMAINS.items():
        rows = []
        for d in domains:
            words = sorted(by_domain[d])
            rng.shuffle(words)
            rows_d = [r for w in words for r in by_domain[d][w][:SENSES_MAX_PER_WORD]]
            rows += rows_d[:SENSES_SIZES[sp] // len(domains)] if sp != "train" else rows_d
        if sp == "train":
            rng.shuffle(rows)
            out["train-full"] = rows        # every training context: builtin wordnet-senses-full
            rows = rows[:SENSES_SIZES[sp]]  # a prefix of it
        out[sp] = rows
    dictionary = [{"id": s["id"], "title": title(s), "description": s["definition"],
                   "domain": DOMAIN_OF[s["lexname"]]} for s in synsets]
    return out, dictionary


def ranking_summary(splits: dict[str, list[dict]], dictionary: list[dict],
                    split_domains: dict[str, tuple[str, ...]] = SPLIT_DOMAINS) -> str:
    """Contexts, mean/max K and dictionary size per domain and split (of this split's domains, or
    of another split's: scripts/wordnet_ranking_b.py)."""
    dict_size = collections.Counter(e["domain"] for e in dictionary)
    lines = ["| split | domain | contexts | mean K | max K | first-listed = gold | dictionary entries |",
             "|---|---|---|---|---|---|---|"]
    for sp, rows in splits.items():
        for d in split_domains.get(sp, ()):
            ks = [len(r["candidates"]) for r in rows if r["domain"] == d]
            first = sum(r["label"] == 0 for r in rows if r["domain"] == d)
            if ks:
                lines.append(f"| {sp} | {d} | {len(ks)} | {sum(ks) / len(ks):.1f} | {max(ks)} | "
                             f"{first / len(ks):.1%} | {dict_size[d]} |")
    return "\n".join(lines)


README = """
## wordnet-senses (ranking, explicit candidates)

A context is a usage example whose target word is marked: `context_left`, `mention` (the word as
it occurs, inflections allowed), `context_right`. `candidates` are the definitions of every sense
of that word in all parts of speech (`index.*`), each as `{{"id": synset id, "text": "synonyms:
definition"}}` in WordNet's sense order (repeated definitions kept once); `label` is the index of
the example's own synset, `gold` its id. Only words with at least 2 senses; one example per
synset, at most {max_per_word} per word. `domain` is a group of lexicographer files; whole domains
are held out: train on {train}, validate on {validation}, test on {test} (zero-shot).

{table}

Domains: {domains}.

`wordnet-senses-full` has the same validation and test files and every training context of the
training domains ({n_full:,}, `train-full.jsonl.gz`); the {n_train:,} of `wordnet-senses` are the
first of them.

## wordnet-linking (ranking against a dictionary)

The same contexts (the wordnet-senses split files), linked by `gold` against `dictionary.jsonl.gz`:
every synset of WordNet as `id`, `title` (its words), `description` (its definition) and `domain`
(the group of its lexicographer file). A context is linked against the entries of its own domain
(thousands), as in zero-shot entity linking.

A second split of the same contexts, `wordnet-senses-b` / `wordnet-linking-b` (test = people +
things, validation = acts-states, no word in two splits), is made from these files by
`scripts/wordnet_ranking_b.py`: see `README-wordnet-senses-b.md`.
"""


def readme(splits, dictionary) -> str:
    return README.format(
        max_per_word=SENSES_MAX_PER_WORD, table=ranking_summary(splits, dictionary),
        n_full=len(splits["train-full"]), n_train=len(splits["train"]),
        train=", ".join(SPLIT_DOMAINS["train"]), validation=", ".join(SPLIT_DOMAINS["validation"]),
        test=", ".join(SPLIT_DOMAINS["test"]),
        domains="; ".join(f"`{d}` = {lexes.replace(' ', ', ')}" for d, lexes in DOMAINS.items()))


MANIFEST = {
    "wordnet-senses": {"task": "ranking", "text": "context", "label": "label", "description":
                       "WordNet 3.0 usage example with its word marked -> the right one of the "
                       "word's sense definitions (all parts of speech); domains held out"},
    "wordnet-senses-full": {"task": "ranking", "text": "context", "label": "label", "description":
                            "wordnet-senses with every training context of its training domains (the "
                            "4,000 of wordnet-senses are the first of them); same validation and test"},
    "wordnet-linking": {"task": "ranking", "text": "context", "label": "gold", "description":
                        "the wordnet-senses contexts linked against all synsets of their domain "
                        "(entity-linking style dictionary)"}}
