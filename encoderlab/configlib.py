"""How an experiment config is declared, typed, checked and parsed, independent of its fields:
`opt` / `sub` field declarations (doc, choices, `late`), dict -> frozen dataclass with type, choice and
range checks (`from_dict`), dataclass -> dict, dotted overrides and flattening. The fields themselves
(and their value ranges) are in `encoderlab.config`."""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import typing
from dataclasses import field
from typing import Any

from encoderlab.errors import ConfigError


def opt(default: Any, doc: str, choices: tuple | None = None, late: bool = False):
    """A dataclass field with a default, a one-line doc and optionally the allowed values.

    `late` marks a field added after runs were first stored: at its default it stays out of
    `config_hash`, so stored runs keep matching their sweep points."""
    meta = {"doc": doc, "choices": choices, "late": late}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults (configs are frozen)")
    return field(default=default, metadata=meta)


def sub(cls, doc: str, late: bool = False):
    return field(default_factory=cls, metadata={"doc": doc, "choices": None, "late": late})


def check_range(key: str, value, ranges: dict[str, str]) -> None:
    """A finite number inside its interval (`ranges[key]`: "[" / "]" include the bound, "(" / ")" do not)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    if key not in ranges or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    spec = ranges[key]
    low, high = (float(x) for x in spec[1:-1].split(","))
    above = value >= low if spec[0] == "[" else value > low
    below = value <= high if spec[-1] == "]" else value < high
    if not (above and below):
        raise ConfigError(f"{key}: {value!r} is out of range {spec}")



def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def is_config(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, str(tp))


def coerce(value: Any, tp, key: str):
    """Check one leaf value against its declared type; ints are accepted for floats."""
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls, raw: dict, prefix: str = "", ranges: dict[str, str] | None = None):
    """Build a (nested) config dataclass from a plain dict, validating every key (types, `choices`,
    and the `ranges` of dotted keys, see `check_range`)."""
    hints = typing.get_type_hints(cls)
    fields = fields_of(cls)
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else \
                f"; valid keys: {', '.join(prefix + k for k in fields)}"
            raise ConfigError(f"unknown key '{dotted}'{hint}")
        tp = hints[key]
        if is_config(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted}: expected a table of settings, got {value!r}")
            kwargs[key] = from_dict(tp, value, f"{dotted}.", ranges)
            continue
        value = coerce(value, tp, dotted)
        for v in value if isinstance(value, tuple) else (value,):
            check_range(dotted, v, ranges or {})
        choices = fields[key].metadata.get("choices")
        for v in (value if isinstance(value, tuple) else (value,)) if choices else ():
            if v not in choices:    # a list-valued key checks each of its items
                close = difflib.get_close_matches(str(v), [str(c) for c in choices], n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"{dotted}: '{v}' is not one of {', '.join(choices)}{hint}")
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=2e-5' -> ('train.lr', 2e-05); values are TOML literals, bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. train.lr=2e-5")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{p}' is a value, not a table")
    node[parts[-1]] = value


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
