"""Choosing runs to analyse: store queries (group, name, ids, status) and splitting a selection
by the value of a config key (`--where`, `--paired KEY A B`)."""

from __future__ import annotations

import difflib
from typing import Any, Sequence

from encoderlab import config as C
from encoderlab.analysis.configs import same, short
from encoderlab.analysis.facts import read_facts
from encoderlab.errors import ConfigError
from encoderlab.store.runs import Run, RunStore


def select(store: RunStore, group: str | None = None, ids: Sequence[str] | None = None,
           name: str | None = None, status: str | None = "completed") -> list[Run]:
    """Runs of the store, oldest first. `group` / `name` are patterns as in `encoderlab runs`
    (SQL LIKE, * = %); `ids` are run references (id, unique prefix/suffix, 'last'), kept in the
    order given; `status` None (or 'any') keeps every status. All filters combine."""
    want_status = None if status in (None, "any", "all") else status
    rows = store.list(name=name, group=group, status=want_status)
    allowed = [r["id"] for r in rows]
    if ids:
        refs = [store.get(ref).id for ref in ids]
        keep = set(allowed)
        picked = list(dict.fromkeys(r for r in refs if r in keep))
    else:
        picked = allowed
    return [store.get(i) for i in picked]


def _spellings(text: Any) -> list[Any]:
    """Ways a user-given value (often a CLI string) may equal a config value."""
    out = [text]
    if isinstance(text, str):
        try:
            out.append(C.parse_override(f"v={text}")[1])
        except ConfigError:
            pass
    return out


def distinct(runs: Sequence[Run], key: str) -> list[Any]:
    """The values of dotted config field `key` among `runs`, in order of first appearance."""
    out: list[Any] = []
    for f in read_facts(runs):
        _check_key(key, f.flat)
        v = f.flat[key]
        if not any(same(v, o) for o in out):
            out.append(v)
    return out


def split_by(runs: Sequence[Run], key: str, values: Sequence[Any] | None = None) -> list[list[Run]]:
    """Runs grouped by the value of dotted config field `key`, one list per value in `values`
    (strings from the command line match typed values: "1e-4" matches 0.0001). With `values`
    None, one list per distinct value (see `distinct`). A value no run has is an error."""
    facts = read_facts(runs)
    for f in facts:
        _check_key(key, f.flat)
    if values is None:
        values = distinct(runs, key)
    out = []
    for want in values:
        options = _spellings(want)
        side = [f.run for f in facts if any(same(f.flat[key], o) for o in options)]
        if not side:
            present = ", ".join(short(v) for v in distinct(runs, key))
            raise ConfigError(f"no run has {key} = {want!r}; values present: {present or 'none'}")
        out.append(side)
    return out


def _check_key(key: str, flat: dict) -> None:
    if key not in flat:
        close = difflib.get_close_matches(key, list(flat), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown config key '{key}'{hint}")
