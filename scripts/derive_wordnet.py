"""Derive encoderlab's builtin datasets (wordnet-lexname, wordnet-usage, the ranking sets
wordnet-senses, wordnet-linking of scripts/wordnet_ranking.py, and wordnet-multilex (multi-label),
wordnet-similarity (regression) of scripts/wordnet_tasks.py) from WordNet 3.0.

Run from the repository root (WordNet from Debian/Ubuntu's ``wordnet-base`` package):

    python scripts/derive_wordnet.py --wordnet-dir /usr/share/wordnet --out encoderlab/data/builtin

Reads WordNet's ``data.*``, ``index.*`` and ``*.exc`` files directly (format: ``man 5 wndb``) and
writes gzipped JSONL splits, manifest.json, README.md and LICENSE-WordNet.txt. The output is
byte-for-byte reproducible: fixed seed, inputs in file order, gzip mtime 0.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import random
import re
from pathlib import Path

import wordnet_ranking as WR
import wordnet_tasks as WT

SEED = 20060101
LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
            "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food "
            "noun.group noun.location noun.motive noun.object noun.person noun.phenomenon "
            "noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
            "noun.state noun.substance noun.time verb.body verb.change verb.cognition "
            "verb.communication verb.competition verb.consumption verb.contact verb.creation "
            "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative "
            "verb.weather adj.ppl").split()  # position = lex_filenum (`man 5 lexnames`)
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
SPLITS = ("train", "validation", "test")
LEXNAME_SIZES = {"train": 20000, "validation": 2000, "test": 2000}
LEXNAME_MIN_CLASS, LEXNAME_MIN_PER_SPLIT = 30, 2
USAGE_SIZES = {"test": 1000, "validation": 1000, "train": 8000}  # examples, two pairs each
USAGE_MAX_PER_WORD = 8  # keeps very polysemous verbs (break, take, ...) from dominating a split

# A double quote opens the examples when it follows the start, ';', ':', ',' or "e.g.".
EXAMPLES_START = re.compile(r'(?:^|[;:,]|\be\.g\.,?)\s*"')
# One quoted example with its separators and an optional attribution ('"..."- Shakespeare').
EXAMPLE = re.compile(r'(?:[\s;:,.]|e\.g\.)*"([^"]*)"(?:\s*-\s*[^;"]*)?[\s;:,.]*')
# A quoted phrase after these cues belongs to the definition ('as in the expression "on the job"').
PHRASE_CUE = re.compile(r"(?:as in|phrase|expression|as)\s*$", re.I)


def mask_parens(s: str) -> str:
    """Blank out (nested) parentheses: quotes inside them are never examples."""
    while (masked := re.sub(r"\([^()]*\)", lambda m: "#" * len(m[0]), s)) != s:
        s = masked
    return s


def split_gloss(gloss: str) -> tuple[str, list[str]]:
    """(definition, usage examples); the definition is "" when it is only a parenthetical."""
    gloss = " ".join(gloss.split())
    m = EXAMPLES_START.search(mask_parens(gloss))
    defn, rest = (gloss, "") if m is None else (gloss[:m.start()], gloss[m.start():])
    defn = defn.rstrip(" ;:,")
    # An example glued on without a separator: '(of a ball) "a ball that is out of play is dead"'.
    m = re.search(r'\s"[^"]+"$', mask_parens(defn))
    if m and not PHRASE_CUE.search(defn[:m.start()]):
        defn, rest = defn[:m.start()], defn[m.start():] + "; " + rest
    # An example that lost its opening quote: 'focus once again; The physicist refocused ..."'.
    if defn.count('"') % 2:
        head, _, tail = defn.rpartition(";")
        defn, rest = ((head, f'"{tail.strip()}; {rest}') if head and defn.endswith('"')
                      else (defn.replace('"', ""), rest))
    defn = re.sub(r"[\s;:,]*(?:\bas in\b)?[\s;:,]*$", "", defn)
    if not re.search(r"[A-Za-z]", mask_parens(defn)):  # e.g. "(of persons)"
        defn = ""
    examples, pos = [], 0
    while pos < len(rest.rstrip("; ")):
        m = EXAMPLE.match(rest, pos)
        if m is None or rest.count('"') % 2:  # broken quoting: no example is trustworthy
            return defn, []
        examples.append(m[1].strip())
        pos = m.end()
    return defn, [e for e in examples if len(e.split()) >= 2]  # not bare forms like "awe-struck"


def read_synsets(wndir: Path) -> list[dict]:
    synsets = []
    for pos, name in POS_FILES.items():
        for line in (wndir / f"data.{name}").read_text(encoding="utf-8").splitlines():
            if line.startswith("  "):  # license header
                continue
            fields, _, gloss = line.partition(" | ")
            f = fields.split()
            words = [re.sub(r"\((?:a|p|ip)\)$", "", w) for w in f[4:4 + 2 * int(f[3], 16):2]]
            defn, examples = split_gloss(gloss)
            if defn:
                synsets.append({"id": pos + f[0], "pos": pos, "lexname": LEXNAMES[int(f[1])],
                                "words": words, "definition": defn, "examples": examples})
    return synsets


def allocate(counts: dict[str, int], total: int, floor: int) -> dict[str, int]:
    """Share `total` out in proportion to `counts` (largest remainder), at least `floor` each."""
    quota = {c: total * k / sum(counts.values()) for c, k in counts.items()}
    alloc = {c: max(floor, int(q)) for c, q in quota.items()}
    while (diff := total - sum(alloc.values())) != 0:
        step = 1 if diff > 0 else -1  # raising small classes to the floor costs the big ones
        c = max((c for c in alloc if step > 0 or alloc[c] > floor),
                key=lambda c: (step * (quota[c] - alloc[c]), c))
        alloc[c] += step
    return alloc


def build_lexname(synsets: list[dict], rng: random.Random) -> dict[str, list[dict]]:
    by_def = collections.defaultdict(list)
    for s in synsets:
        by_def[s["definition"].lower()].append(s)
    by_class = collections.defaultdict(list)
    for group in by_def.values():
        if len({s["lexname"] for s in group}) == 1:  # a definition with two labels is unlearnable
            by_class[group[0]["lexname"]].append(group[0])
    by_class = {c: by_class[c] for c in sorted(by_class) if len(by_class[c]) >= LEXNAME_MIN_CLASS}
    counts = {c: len(members) for c, members in by_class.items()}
    alloc = {sp: allocate(counts, n, LEXNAME_MIN_PER_SPLIT) for sp, n in LEXNAME_SIZES.items()}
    out = {sp: [] for sp in SPLITS}
    for c, members in by_class.items():
        rng.shuffle(members)
        for sp in SPLITS:
            take, members = members[:alloc[sp][c]], members[alloc[sp][c]:]
            out[sp] += [{"id": s["id"], "text": s["definition"], "label": c} for s in take]
    return out


def word_forms(lemma: str, pos: str, irregular: dict) -> set[str]:
    """The lemma with simple regular inflections and WordNet's irregular forms (*.exc)."""
    def inflect(w: str) -> set[str]:
        forms, stem = {w} | irregular.get((pos, w), set()), w.removesuffix("e")
        y = w[:-1] + "i" if w.endswith("y") else w  # carry -> carries, carried
        if pos in "nv":
            forms |= {w + "s", w + "es", y + "es"}
        if pos == "v":
            forms |= {w + "d", w + "ed", y + "ed", stem + "ing"}
            forms |= {w + w[-1] + "ed", w + w[-1] + "ing"}  # stop -> stopped, stopping
        if pos == "a":
            forms |= {stem + "er", stem + "est", y + "er", y + "est"}
        return forms
    tokens = lemma.split()
    i = 0 if pos == "v" else len(tokens) - 1  # "warmed up", but "hot dogs"
    return {" ".join(tokens[:i] + [f] + tokens[i + 1:]) for f in inflect(tokens[i])}


def occurs(forms: set[str], sentence: str) -> bool:
    alternatives = "|".join(r"[\s-]+".join(map(re.escape, f.split()))
                            for f in sorted(forms, key=len, reverse=True))
    return re.search(rf"(?<![\w-])(?:{alternatives})(?![\w-])", sentence, re.I) is not None


def build_usage(synsets: list[dict], wndir: Path, rng: random.Random) -> dict[str, list[dict]]:
    by_id = {s["id"]: s for s in synsets}
    senses, irregular = {}, collections.defaultdict(set)
    for pos, name in POS_FILES.items():
        for line in (wndir / f"index.{name}").read_text(encoding="utf-8").splitlines():
            if not line.startswith("  "):
                f = line.split()  # lemma pos synset_cnt ... synset_offset x synset_cnt
                senses[pos, f[0]] = [pos + off for off in f[-int(f[2]):] if pos + off in by_id]
        for line in (wndir / f"{name}.exc").read_text(encoding="utf-8").splitlines():
            inflected, *bases = line.replace("_", " ").split(" ")
            for base in bases:
                irregular[pos, base].add(inflected)

    by_word, seen = collections.defaultdict(list), set()
    for s in synsets:
        candidates = ((k, s["examples"][k], w.lower()) for k in rng.sample(
            range(len(s["examples"])), len(s["examples"])) for w in dict.fromkeys(s["words"]))
        for k, example, word in candidates:
            others = [by_id[o] for o in senses.get((s["pos"], word), ()) if o != s["id"]
                      and by_id[o]["definition"].lower() != s["definition"].lower()]
            lemma = word.replace("_", " ")
            if (others and example.lower() not in seen
                    and occurs(word_forms(lemma, s["pos"], irregular), example)):
                seen.add(example.lower())
                by_word[lemma].append((s, k, example, rng.choice(others)))
                break  # one example per synset

    words = sorted(by_word)
    rng.shuffle(words)
    chosen, owner = {sp: [] for sp in USAGE_SIZES}, {}  # owner: definition -> split
    for word in words:  # a word goes whole to the first split with room
        for sp, size in USAGE_SIZES.items():
            # No definition, as positive or negative, may show up in two splits either.
            items = [it for it in by_word[word] if all(owner.get(d, sp) == sp for d in (
                it[0]["definition"].lower(), it[3]["definition"].lower()))][:USAGE_MAX_PER_WORD]
            if items and len(chosen[sp]) + len(items) <= size:
                chosen[sp] += [(word, *it) for it in items]
                owner.update({it[i]["definition"].lower(): sp for it in items for i in (0, 3)})
                break
    return {sp: [row for word, s, k, example, neg in chosen[sp] for row in (
        {"id": f"{s['id']}-{k}-match", "word": word, "text_a": example,
         "text_b": s["definition"], "label": "match"},
        {"id": f"{s['id']}-{k}-other", "word": word, "text_a": example,
         "text_b": neg["definition"], "label": "other_sense"})] for sp in SPLITS}


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())


def summary(splits: dict[str, list[dict]], focus: str = "") -> str:
    """Sizes, class count, majority-class (or `focus`) share and a label x split table."""
    count = {sp: collections.Counter(r["label"] for r in rows) for sp, rows in splits.items()}
    labels = sorted(set().union(*count.values()))
    share = {sp: (c[focus] if focus else max(c.values())) / c.total() for sp, c in count.items()}
    lines = [", ".join(f"{sp} {len(rows)}" for sp, rows in splits.items()) + f" rows; "
             f"{len(labels)} classes; {f'`{focus}`' if focus else 'majority-class'} share: "
             + ", ".join(f"{sp} {v:.1%}" for sp, v in share.items()) + ".", "",
             "| label | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(f"{c[label]} ({c[label] / c.total():.1%})"
                                          for c in count.values()) + " |" for label in labels]
    return "\n".join(lines)


README = """# Builtin datasets

Derived from [WordNet 3.0](https://wordnet.princeton.edu/) under its license, see
`LICENSE-WordNet.txt`. `manifest.json` lists each dataset's task, columns, labels and split files
(gzipped JSONL, rows in a fixed shuffled order). Regenerate them, byte for byte, with

    python scripts/derive_wordnet.py --wordnet-dir /usr/share/wordnet --out encoderlab/data/builtin

## wordnet-lexname (single text)

`text`: a synset definition (gloss without its usage examples); `label`: the synset's
lexicographer file (`noun.animal`, `verb.motion`, `adj.all`, ...); `id`: part of speech (n, v, a,
r) + synset offset. Repeated definitions are kept once if their labels agree and dropped if not;
bare parentheticals like "(of persons)" are dropped; classes under {min_class} synsets would be
dropped (none is). Each split is stratified: classes in proportion to their frequency, at least
{min_per_split} examples of every class.

{lexname}

## wordnet-usage (text pair)

`text_a`: a usage example; `text_b`: a definition; `label`: `match` if `text_b` defines the
example's synset, `other_sense` if it defines another sense (same part of speech, per `index.*`,
different definition) of `word`, a word of the example's synset found in the example
(case-insensitive, inflections allowed). One example per synset, one pair of each label per
example; `id` = synset id, example index, match/other. Splits are by word, with at most
{max_per_word} examples per word; no word, example or definition occurs in two splits.

{usage}
"""
MANIFEST = {
    "wordnet-lexname": {"task": "single", "text": "text", "label": "label", "description":
                        "WordNet 3.0 definition -> lexicographer file (coarse semantic class)"},
    "wordnet-usage": {"task": "pair", "text": "text_a", "text_pair": "text_b", "label": "label",
                      "description": "WordNet 3.0 usage example + definition -> the example's "
                                     "sense (match) or another sense of its word (other_sense)"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--license-file", type=Path,
                        default=Path("/usr/share/doc/wordnet-base/copyright"))
    parser.add_argument("--out", type=Path, default=Path("encoderlab/data/builtin"))
    args = parser.parse_args()

    synsets = read_synsets(args.wordnet_dir)
    datasets = {"wordnet-lexname": build_lexname(synsets, random.Random(SEED)),
                "wordnet-usage": build_usage(synsets, args.wordnet_dir, random.Random(SEED))}
    manifest = {}
    for name, splits in datasets.items():
        for sp, rows in splits.items():
            random.Random(SEED).shuffle(rows)
            write_jsonl_gz(args.out / name / f"{sp}.jsonl.gz", rows)
        manifest[name] = {**MANIFEST[name], "labels": sorted({r["label"] for r in splits["train"]}),
                          "splits": {sp: f"{name}/{sp}.jsonl.gz" for sp in SPLITS},
                          "sizes": {sp: len(rows) for sp, rows in splits.items()},
                          "license": "LICENSE-WordNet.txt"}
        print(name, summary(splits).splitlines()[0])
    senses, dictionary = WR.build_ranking(synsets, args.wordnet_dir, POS_FILES, word_forms,
                                          random.Random(SEED))
    for sp, rows in senses.items():
        write_jsonl_gz(args.out / "wordnet-senses" / f"{sp}.jsonl.gz", rows)
    write_jsonl_gz(args.out / "wordnet-linking" / "dictionary.jsonl.gz", dictionary)
    for name in WR.MANIFEST:
        files = {sp: "train-full" if sp == "train" and name == "wordnet-senses-full" else sp for sp in SPLITS}
        manifest[name] = {**WR.MANIFEST[name],
                          "splits": {sp: f"wordnet-senses/{f}.jsonl.gz" for sp, f in files.items()},
                          "sizes": {sp: len(senses[f]) for sp, f in files.items()},
                          "license": "LICENSE-WordNet.txt"}
    manifest["wordnet-linking"]["dictionary"] = "wordnet-linking/dictionary.jsonl.gz"
    lemma_senses, _ = WR.read_senses(args.wordnet_dir, {s["id"]: s for s in synsets}, POS_FILES)
    tasks = {"wordnet-multilex": WT.build_multilex(synsets, lemma_senses, random.Random(SEED)),
             "wordnet-similarity": WT.build_similarity(synsets, args.wordnet_dir, random.Random(SEED))}
    for name, splits in tasks.items():
        for sp, rows in splits.items():
            write_jsonl_gz(args.out / name / f"{sp}.jsonl.gz", rows)
        manifest[name] = {**WT.MANIFEST[name], "splits": {sp: f"{name}/{sp}.jsonl.gz" for sp in SPLITS},
                          "sizes": {sp: len(rows) for sp, rows in splits.items()},
                          "license": "LICENSE-WordNet.txt"}
        if name == "wordnet-multilex":
            manifest[name]["labels"] = sorted({lab for r in splits["train"] for lab in r["labels"].split("|")})
    print("wordnet-multilex", WT.multilex_summary(tasks["wordnet-multilex"]).splitlines()[0])
    print("wordnet-senses", {sp: len(rows) for sp, rows in senses.items()}, "dictionary", len(dictionary))
    # other builtins (scripts/derive_series.py) keep their entries
    path = args.out / "manifest.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(manifest)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    (args.out / "README.md").write_text(README.format(
        min_class=LEXNAME_MIN_CLASS, min_per_split=LEXNAME_MIN_PER_SPLIT,
        max_per_word=USAGE_MAX_PER_WORD, lexname=summary(datasets["wordnet-lexname"]),
        usage=summary(datasets["wordnet-usage"], focus="match")) + WR.readme(senses, dictionary)
        + WT.readme(tasks["wordnet-multilex"], tasks["wordnet-similarity"]))
    # The WordNet3.0 stanza of the Debian copyright file, unfolded (" ." lines are blank lines).
    stanza = args.license_file.read_text(encoding="utf-8").split("License: WordNet3.0\n")[1]
    notice = [line[1:] if line != " ." else "" for line in stanza.split("\n\n")[0].splitlines()]
    (args.out / "LICENSE-WordNet.txt").write_text(
        "The datasets in this directory are derived from WordNet 3.0, which is distributed\n"
        "under the following license:\n\n" + "\n".join(notice) + "\n")


if __name__ == "__main__":
    main()
