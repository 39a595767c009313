"""Builtin datasets shipped inside the package (derived by scripts/derive_wordnet.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from encoderlab.errors import DataError

ROOT = Path(__file__).parent / "builtin"


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    task: str
    text: str
    text_pair: str
    label: str
    files: dict[str, Path]
    description: str
    dictionary: Path | None = None   # ranking sets linked against a dictionary of entries


@lru_cache(maxsize=None)
def _manifest() -> dict:
    return json.loads((ROOT / "manifest.json").read_text())


def names() -> list[str]:
    return sorted(_manifest())


def get(name: str) -> BuiltinDataset:
    m = _manifest()
    if name not in m:
        import difflib
        close = difflib.get_close_matches(name, list(m), n=1)
        hint = f"; did you mean 'builtin:{close[0]}'?" if close else ""
        raise DataError(f"no builtin dataset '{name}' (available: {', '.join(names())}){hint}",
                        field="data.source")
    d = m[name]
    return BuiltinDataset(name, d["task"], d["text"], d.get("text_pair", ""), d["label"],
                          {k: ROOT / v for k, v in d["splits"].items()}, d.get("description", ""),
                          ROOT / d["dictionary"] if d.get("dictionary") else None)
