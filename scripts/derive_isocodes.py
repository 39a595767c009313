"""Derive the builtin `iso-langid` dataset (country names in many languages -> the language) from
Debian's iso-codes package, into encoderlab/data/builtin/iso-langid/.

Command (iso-codes is installed on Debian / Ubuntu as a dependency of most desktops):

    apt-get install -y iso-codes
    python scripts/derive_isocodes.py

Texts are the translations of the ISO 3166-1 country names (name, official name, common name) in
the gettext catalogs `/usr/share/locale/<locale>/LC_MESSAGES/iso_3166-1.mo`; the label is the
locale. The locales are chosen for their scripts: many of them (Thai, Khmer, Sinhala, most Indic
scripts) are characters MiniLM's uncased English WordPiece vocabulary does not hold, so the set
shows what [UNK] tokens cost (see the README section "Vocabulary coverage").

The other builtins' manifest.json entries are kept; the output is byte for byte reproducible.
"""

from __future__ import annotations

import argparse
import collections
import gettext
import gzip
import json
import random
from pathlib import Path

SEED = 0
NAME = "iso-langid"
SPLITS = ("train", "validation", "test")
FRACTIONS = {"validation": 0.15, "test": 0.15}
# (locale, script): several locales per shared script (Cyrillic, Arabic, Devanagari, Bengali, Han,
# Latin) so the script alone does not give the label away, plus one locale of many other scripts
LOCALES = (
    ("ru", "Cyrillic"), ("uk", "Cyrillic"), ("be", "Cyrillic"), ("bg", "Cyrillic"), ("sr", "Cyrillic"),
    ("kk", "Cyrillic"), ("ky", "Cyrillic"), ("tg", "Cyrillic"),
    ("ar", "Arabic"), ("fa", "Arabic"), ("ug", "Arabic"),
    ("hi", "Devanagari"), ("mr", "Devanagari"), ("ne", "Devanagari"),
    ("bn", "Bengali"), ("as", "Bengali"),
    ("zh_CN", "Han (simplified)"), ("zh_TW", "Han (traditional)"), ("ja", "Han + kana"),
    ("ko", "Hangul"), ("ka", "Georgian"), ("hy", "Armenian"), ("th", "Thai"), ("km", "Khmer"),
    ("si", "Sinhala"), ("ta", "Tamil"), ("te", "Telugu"), ("kn", "Kannada"), ("ml", "Malayalam"),
    ("gu", "Gujarati"), ("pa", "Gurmukhi"), ("or", "Odia"), ("dz", "Tibetan"), ("el", "Greek"),
    ("he", "Hebrew"),
    ("fr", "Latin"), ("de", "Latin"), ("it", "Latin"), ("pl", "Latin"), ("tr", "Latin"),
    ("vi", "Latin"), ("eo", "Latin"), ("is", "Latin"), ("hu", "Latin"),
)
MANIFEST = {"task": "single", "text": "text", "label": "label",
            "description": "ISO 3166-1 country name translated into one of 44 languages (iso-codes) "
                           "-> the language (locale); many scripts outside MiniLM's vocabulary"}


def translations(locale_dir: Path, locale: str) -> list[tuple[str, str]]:
    """(English msgid, translation) pairs of a locale's country-name catalog, translated ones only."""
    with open(locale_dir / locale / "LC_MESSAGES" / "iso_3166-1.mo", "rb") as fh:
        catalog = gettext.GNUTranslations(fh)._catalog
    return sorted((k, v.strip()) for k, v in catalog.items()
                  if isinstance(k, str) and k and v.strip() and v.strip() != k)


def build(locale_dir: Path, rng: random.Random) -> dict[str, list[dict]]:
    rows = {loc: translations(locale_dir, loc) for loc, _ in LOCALES}
    # a text written the same way in two locales (e.g. a name shared by Russian and Bulgarian)
    # cannot be told apart: drop it everywhere
    owners = collections.defaultdict(set)
    for loc, pairs in rows.items():
        for _, text in pairs:
            owners[text].add(loc)
    splits = {sp: [] for sp in SPLITS}
    for loc, script in LOCALES:
        seen, items = set(), []
        for english, text in rows[loc]:
            if len(owners[text]) == 1 and text not in seen:
                seen.add(text)
                items.append({"id": f"{loc}:{english}", "text": text, "label": loc, "script": script})
        rng.shuffle(items)          # stratified: every locale split in the same proportions
        n_val, n_test = (round(len(items) * FRACTIONS[sp]) for sp in ("validation", "test"))
        splits["validation"] += items[:n_val]
        splits["test"] += items[n_val:n_val + n_test]
        splits["train"] += items[n_val + n_test:]
    for sp in SPLITS:
        random.Random(SEED).shuffle(splits[sp])
    return splits


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())


README = """# iso-langid (single text)

Derived from Debian's [iso-codes](https://salsa.debian.org/iso-codes-team/iso-codes) package
(version {version}) under the LGPL-2.1+, see `LICENSE-iso-codes.txt`. Regenerate, byte for byte, with

    python scripts/derive_isocodes.py

`text`: an ISO 3166-1 country name (name, official name or common name) as translated in the
locale's gettext catalog `iso_3166-1.mo`; `label`: the locale; `script`: its script (not a model
input); `id`: locale + the English name. Untranslated entries and texts written identically in two
locales are dropped. Each locale is split 70 / 15 / 15 (train / validation / test).

{rows} rows; {classes} classes.

| label | script | train | validation | test |
|---|---|---|---|---|
{table}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locale-dir", type=Path, default=Path("/usr/share/locale"))
    parser.add_argument("--license-file", type=Path, default=Path("/usr/share/doc/iso-codes/copyright"))
    parser.add_argument("--lgpl", type=Path, default=Path("/usr/share/common-licenses/LGPL-2.1"))
    parser.add_argument("--version", default="4.15.0", help="iso-codes version (for the README)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "encoderlab" / "data" / "builtin")
    args = parser.parse_args()

    splits = build(args.locale_dir, random.Random(SEED))
    for sp, rows in splits.items():
        write_jsonl_gz(args.out / NAME / f"{sp}.jsonl.gz", rows)
    path = args.out / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}   # other builtins keep their entries
    manifest[NAME] = {**MANIFEST, "labels": sorted({r["label"] for r in splits["train"]}),
                      "splits": {sp: f"{NAME}/{sp}.jsonl.gz" for sp in SPLITS},
                      "sizes": {sp: len(rows) for sp, rows in splits.items()},
                      "license": "LICENSE-iso-codes.txt"}
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    count = {sp: collections.Counter(r["label"] for r in rows) for sp, rows in splits.items()}
    table = "\n".join(f"| {loc} | {script} | " + " | ".join(str(count[sp][loc]) for sp in SPLITS) + " |"
                      for loc, script in LOCALES)
    sizes = ", ".join(f"{sp} {len(rows)}" for sp, rows in splits.items())
    (args.out / "README-iso-langid.md").write_text(README.format(
        version=args.version, rows=sizes, classes=len(LOCALES), table=table))
    (args.out / "LICENSE-iso-codes.txt").write_text(
        "The iso-langid dataset in this directory is derived from the iso-codes package, distributed\n"
        "under the following terms (its Debian copyright file):\n\n"
        + args.license_file.read_text(encoding="utf-8")
        + "\n\nGNU LESSER GENERAL PUBLIC LICENSE, version 2.1:\n\n" + args.lgpl.read_text(encoding="utf-8"))
    print(NAME, sizes, f"{len(LOCALES)} classes")


if __name__ == "__main__":
    main()
