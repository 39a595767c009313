"""What makes stored runs repetitions of one configuration: the single definition used by
compare, diagnose and report, and the helpers that flatten, key, group and label runs by it.

A *configuration* is the set of runs whose resolved configs are equal once the keys that do not
change what is learned (``REPLICATE_KEYS``: name, group, seed, fold, threads, device) are ignored.
``train.precision`` is not among them: fp32 and bf16 runs are different configurations.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Sequence, TypeVar

from encoderlab import config as C
from encoderlab.store.runs import Run

# keys that do not change what is learned: runs equal but for these are repeats of one configuration
REPLICATE_KEYS = ("name", "group", "train.seed", "data.fold", "train.threads", "train.device")
# what names the dataset, ignored (with REPLICATE_KEYS) when configurations are compared across datasets
DATASET_KEYS = ("data.source", "data.validation", "data.test", "data.format", "data.task", "data.text",
                "data.text_pair", "data.label", "data.labels")

T = TypeVar("T")
_ABSENT = object()


def flat_config(run: Run) -> dict:
    """The run's resolved config as {dotted key: value}, defaults filled in so old runs compare fine;
    a config with a key this version no longer knows is read as written."""
    try:
        return C.flatten(C.to_dict(run.config()))
    except Exception:
        return C.flatten(C.load_raw(run.dir / "config.toml"))


def key_of(flat: dict, ignore: Iterable[str] = REPLICATE_KEYS) -> str:
    """Canonical JSON of a flat config without the `ignore` keys: equal keys = same configuration."""
    ig = set(ignore)
    return json.dumps({k: v for k, v in flat.items() if k not in ig}, sort_keys=True, default=str)


def config_key(run: Run) -> str:
    """The resolved config as canonical JSON without REPLICATE_KEYS (name, group, seed, fold, threads,
    device): runs with equal keys are repeats. Raises when config.toml cannot be read."""
    return key_of(flat_config(run))


def group(items: Iterable[T], ignore: Iterable[str] = REPLICATE_KEYS,
          flat: Callable[[T], dict] = lambda x: x.flat) -> list[list[T]]:
    """Items (anything with a flat config, by default its `.flat`) grouped into configurations,
    in order of first appearance."""
    ignore = tuple(ignore)
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key_of(flat(item), ignore), []).append(item)
    return list(groups.values())


def same(a: Any, b: Any) -> bool:
    """Equal as config values: 1 == 1.0, [1, 2] == (1, 2), but true != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def defaults() -> dict:
    """The flat config of an experiment that sets nothing."""
    return C.flatten(C.to_dict(C.ExperimentConfig()))


def varied_fixed(flats: list[dict], ignore: Iterable[str] = REPLICATE_KEYS) -> tuple[list[str], dict]:
    """Dotted keys that differ between the flats (in config order), and the common values
    (those not at their config default first, then the defaults)."""
    ig = set(ignore)
    keys: list[str] = []
    for fl in flats:
        keys.extend(k for k in fl if k not in ig and k not in keys)
    varied, fixed = [], {}
    for k in keys:
        vals = [fl.get(k, _ABSENT) for fl in flats]
        if all(v is not _ABSENT for v in vals) and all(same(v, vals[0]) for v in vals[1:]):
            fixed[k] = vals[0]
        else:
            varied.append(k)
    # fields the experiment set (not at their default) first: a truncated display shows them
    dflt = defaults()
    chosen = [k for k in fixed if k not in dflt or not same(dflt[k], fixed[k])]
    fixed = {k: fixed[k] for k in chosen + [k for k in fixed if k not in chosen]}
    return varied, fixed


def short(v: Any) -> str:
    """A config value as the user would type it: 0.001, true, [1,2]."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(short(x) for x in v) + "]"
    return str(v)


def label(flat: dict, keys: Sequence[str]) -> str:
    """'lr=0.001,seed=1': the last part of each key with its value."""
    return ",".join(f"{k.split('.')[-1]}={short(flat.get(k))}" for k in keys)


def fixed_rows(fixed: dict[str, Any], include_defaults: bool = False) -> list[dict]:
    """`Table.fixed` as rows {"key", "value"} for printing once under a table; by default only
    the fields that differ from the config defaults (what the experiment actually set)."""
    dflt = defaults()
    return [{"key": k, "value": short(v) if not isinstance(v, dict) else json.dumps(v)}
            for k, v in fixed.items()
            if include_defaults or k not in dflt or not same(dflt[k], v)]
