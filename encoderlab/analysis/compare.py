"""Compare stored runs: configurations across seeds, datasets, epochs, checkpoints, paired tests.

Everything here reads the run store (run.json, config.toml, metrics.jsonl) and never trains.
Results are plain row dicts plus a column spec (``Table``) so the CLI prints them with
``encoderlab.analysis.render`` as a terminal table, Markdown, CSV or JSON.

A *configuration* is the set of runs whose resolved configs are equal once ``name``, ``group``,
``train.seed`` and ``data.fold`` are ignored: the repetitions of one experiment. Means and
standard deviations are over those runs; the std is the sample std (ddof=1), missing when n=1.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Iterable, Sequence

import numpy as np

from encoderlab import config as C
from encoderlab.analysis import render as R
from encoderlab.analysis.stats import PM, fmt_pm, mean_std, paired_stats
from encoderlab.analysis.tables import epoch_table
from encoderlab.errors import ConfigError
from encoderlab.store.runs import Run, RunStore

# what makes two runs repetitions of the same configuration
REPLICATE_KEYS = ("name", "group", "train.seed", "data.fold")
# what names the dataset, ignored when configurations are compared across datasets
DATASET_KEYS = ("data.source", "data.validation", "data.test", "data.format", "data.task", "data.text",
                "data.text_pair", "data.label", "data.labels")
METRICS = ("loss", "accuracy", "macro_f1")
SHORT_METRIC = {"accuracy": "acc", "macro_f1": "F1", "loss": "loss"}


@dataclass
class Table:
    """Rows (plain dicts) and how to show them.

    ``columns`` is the human view (formatted "mean ± std" strings); ``data_columns`` the machine
    view (numeric mean / std / n fields) used for CSV and JSON by ``render``."""
    rows: list[dict]
    columns: list[tuple]
    data_columns: list[tuple] | None = None
    title: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)
    varied: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def render(self, fmt: str = "table", width: int = 160) -> str:
        machine = fmt in ("csv", "json") and self.data_columns
        return R.render(self.rows, self.data_columns if machine else self.columns, fmt, self.title, width)

    def print(self, console=None) -> None:
        R.print_table(self.rows, self.columns, self.title, console)


# ---------------------------------------------------------------------------------------------
# selecting runs


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


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def distinct(runs: Sequence[Run], key: str) -> list[Any]:
    """The values of dotted config field `key` among `runs`, in order of first appearance."""
    out: list[Any] = []
    for f in _facts(runs):
        _check_key(key, f.flat)
        v = f.flat[key]
        if not any(_same(v, o) for o in out):
            out.append(v)
    return out


def split_by(runs: Sequence[Run], key: str, values: Sequence[Any] | None = None) -> list[list[Run]]:
    """Runs grouped by the value of dotted config field `key`, one list per value in `values`
    (strings from the command line match typed values: "1e-4" matches 0.0001). With `values`
    None, one list per distinct value (see `distinct`). A value no run has is an error."""
    facts = _facts(runs)
    for f in facts:
        _check_key(key, f.flat)
    if values is None:
        values = distinct(runs, key)
    out = []
    for want in values:
        options = _spellings(want)
        side = [f.run for f in facts if any(_same(f.flat[key], o) for o in options)]
        if not side:
            present = ", ".join(_short(v) for v in distinct(runs, key))
            raise ConfigError(f"no run has {key} = {want!r}; values present: {present or 'none'}")
        out.append(side)
    return out


def _check_key(key: str, flat: dict) -> None:
    if key not in flat:
        close = difflib.get_close_matches(key, list(flat), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown config key '{key}'{hint}")


# ---------------------------------------------------------------------------------------------
# what one run says (read once per call)


@dataclass
class _Facts:
    run: Run
    info: dict
    status: str
    flat: dict
    events: list[dict]

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def seed(self):
        return self.flat.get("train.seed")

    @property
    def fold(self):
        return self.flat.get("data.fold") if self.flat.get("data.folds") else None

    def validations(self) -> list[dict]:
        """Validation events by step (a resumed run's repeated step keeps the newest)."""
        by_step: dict = {}
        for ev in self.events:
            if ev.get("split") == "validation":
                by_step[ev.get("step")] = ev
        return [by_step[s] for s in sorted(by_step, key=lambda s: (s is None, s))]

    def last(self, split: str) -> dict | None:
        hit = None
        for ev in self.events:
            if ev.get("split") == split:
                hit = ev
        return hit

    def best_event(self, metric: str) -> dict | None:
        """The first validation event with the best value of `metric` (as fit picks the best)."""
        best = None
        for ev in self.validations():
            v = ev.get("metrics", {}).get(metric)
            if v is None:
                continue
            if best is None or (v < best[0] if metric == "loss" else v > best[0]):
                best = (v, ev)
        return best[1] if best else None

    def best_val(self, metric: str) -> float | None:
        if self.info.get("best_metric") == metric and self.info.get("best_value") is not None:
            return float(self.info["best_value"])
        ev = self.best_event(metric)
        return None if ev is None else float(ev["metrics"][metric])

    def best_epoch(self, metric: str) -> float | None:
        test = self.last("test")
        if test is not None and self.info.get("best_metric") == metric and test.get("epoch") is not None:
            return float(test["epoch"])        # the checkpoint fit picked and tested
        ev = self.best_event(metric)
        return None if ev is None or ev.get("epoch") is None else float(ev["epoch"])

    def value(self, split: str, metric: str) -> float | None:
        """'validation' = best validation value; any other split = its last event."""
        if split == "validation":
            return self.best_val(metric)
        ev = self.last(split)
        v = None if ev is None else ev.get("metrics", {}).get(metric)
        return None if v is None else float(v)


def _flat_config(run: Run) -> dict:
    try:
        return C.flatten(C.to_dict(run.config()))       # defaults filled in: old runs compare fine
    except Exception:                                   # a key this version no longer knows
        return C.flatten(C.load_raw(run.dir / "config.toml"))


def _facts(runs: Iterable[Run]) -> list[_Facts]:
    out = []
    for r in runs:
        if isinstance(r, _Facts):
            out.append(r)
            continue
        info = r.info
        out.append(_Facts(r, info, r.store.effective_status(info), _flat_config(r), r.events()))
    return out


def _key(flat: dict, ignore: Iterable[str]) -> str:
    ig = set(ignore)
    return json.dumps({k: v for k, v in flat.items() if k not in ig}, sort_keys=True, default=str)


def _group(facts: list[_Facts], ignore: Iterable[str]) -> list[list[_Facts]]:
    groups: dict[str, list[_Facts]] = {}
    for f in facts:
        groups.setdefault(_key(f.flat, ignore), []).append(f)
    return list(groups.values())


_ABSENT = object()


def _varied_fixed(flats: list[dict], ignore: Iterable[str]) -> tuple[list[str], dict]:
    """Dotted keys that differ between the flats (in config order), and the common values
    (those not at their config default first, then the defaults)."""
    ig = set(ignore)
    keys: list[str] = []
    for fl in flats:
        keys.extend(k for k in fl if k not in ig and k not in keys)
    varied, fixed = [], {}
    for k in keys:
        vals = [fl.get(k, _ABSENT) for fl in flats]
        if all(v is not _ABSENT for v in vals) and all(_same(v, vals[0]) for v in vals[1:]):
            fixed[k] = vals[0]
        else:
            varied.append(k)
    # fields the experiment set (not at their default) first: a truncated display shows them
    defaults = _defaults()
    chosen = [k for k in fixed if k not in defaults or not _same(defaults[k], fixed[k])]
    fixed = {k: fixed[k] for k in chosen + [k for k in fixed if k not in chosen]}
    return varied, fixed


def _defaults() -> dict:
    return C.flatten(C.to_dict(C.ExperimentConfig()))


def _short(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


def _label(flat: dict, keys: Sequence[str]) -> str:
    return ",".join(f"{k.split('.')[-1]}={_short(flat.get(k))}" for k in keys)


def _stat_fields(prefix: str, values: list, of: int) -> dict:
    m, s, n = mean_std(values)
    return {f"{prefix}_mean": m, f"{prefix}_std": s, f"{prefix}_n": n, prefix: fmt_pm(m, s, n, of)}


# ---------------------------------------------------------------------------------------------
# 1. configurations across seeds


def _status_counts(facts: list[_Facts]) -> str:
    counts: dict[str, int] = {}
    for f in facts:
        counts[f.status] = counts.get(f.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _replicates(facts: list[_Facts]) -> str:
    seeds = sorted({f.seed for f in facts if f.seed is not None})
    out = ",".join(str(s) for s in seeds)
    folds = sorted({f.fold for f in facts if f.fold is not None})
    if folds:
        out += " x folds " + ",".join(str(x) for x in folds)
    return out


def _varied_columns(varied: list[str]) -> list[tuple]:
    return [(k, k, "g") for k in varied]


def _config_label(facts: list[_Facts]) -> str:
    names = dict.fromkeys((f.info.get("grp") or f.info.get("name") or "").split(":")[0] for f in facts)
    return ", ".join(n for n in names if n) or "runs"


def config_table(runs: Sequence[Run], metric: str = "accuracy",
                 ignore: Sequence[str] = ()) -> Table:
    """One row per configuration (runs equal but for name, group, train.seed, data.fold and the
    dotted keys in `ignore`).

    Row fields: the varied config keys (dotted, as columns), ``config`` (short label), ``n`` (runs),
    ``seeds``, ``val_mean``/``val_std``/``val_n``/``val`` (best validation `metric` of each run),
    ``test_mean``/``test_std``/``test_n``/``test`` (the 'test' event), ``best_epoch`` (mean epoch of
    the best checkpoint), ``status`` (counts, e.g. "2 completed, 1 interrupted") and ``runs`` (ids).
    ``Table.fixed`` holds the fields identical for all configurations."""
    facts = _facts(runs)
    ign = tuple(REPLICATE_KEYS) + tuple(ignore)
    groups = _group(facts, ign)
    varied, fixed = _varied_fixed([g[0].flat for g in groups], ign)
    rows = []
    for g in groups:
        n = len(g)
        row = {k: g[0].flat.get(k) for k in varied}
        row["config"] = _label(g[0].flat, varied) if varied else _config_label(g)
        row["n"] = n
        row["seeds"] = _replicates(g)
        row.update(_stat_fields("val", [f.best_val(metric) for f in g], n))
        row.update(_stat_fields("test", [f.value("test", metric) for f in g], n))
        row["best_epoch"] = mean_std([f.best_epoch(metric) for f in g])[0]
        row["status"] = _status_counts(g)
        row["runs"] = [f.id for f in g]
        rows.append(row)
    not_done = any(f.status != "completed" for f in facts)
    m = SHORT_METRIC.get(metric, metric)
    columns = _varied_columns(varied) or [("config", "config")]
    columns += [("n", "n"), ("seeds", "seeds"), ("val", f"val {m} (best)"), ("test", f"test {m}"),
                ("best_epoch", "best epoch", 2)]
    data_columns = _varied_columns(varied) + [("config", "config"), ("n", "n"), ("seeds", "seeds")]
    for p in ("val", "test"):
        data_columns += [(f"{p}_mean", f"{p}_mean"), (f"{p}_std", f"{p}_std"), (f"{p}_n", f"{p}_n")]
    data_columns += [("best_epoch", "best_epoch"), ("status", "status"), ("runs", "runs")]
    if not_done:
        columns.append(("status", "status"))
    warnings = []
    if not facts:
        warnings.append("no runs selected")
    if any(r["test_n"] < r["n"] for r in rows):
        warnings.append("some runs have no test score (not completed): means use the runs that have one")
    if any(r["n"] == 1 for r in rows):
        warnings.append("a configuration with a single run has no std; run more seeds")
    return Table(rows, columns, data_columns, title=f"{metric}: mean {PM} std over runs", fixed=fixed,
                 varied=varied, warnings=warnings)


def fixed_rows(fixed: dict[str, Any], include_defaults: bool = False) -> list[dict]:
    """`Table.fixed` as rows {"key", "value"} for printing once under a table; by default only
    the fields that differ from the config defaults (what the experiment actually set)."""
    defaults = _defaults()
    return [{"key": k, "value": _short(v) if not isinstance(v, dict) else json.dumps(v)}
            for k, v in fixed.items()
            if include_defaults or k not in defaults or not _same(defaults[k], v)]


# ---------------------------------------------------------------------------------------------
# 2. configurations x datasets

_GENERIC_STEMS = {"train", "training", "data", "dataset", "all", "source", "full"}


def short_names(sources: Sequence[str]) -> dict[str, str]:
    """Short, unique display names for data.source values: 'builtin:wordnet-lexname' ->
    'wordnet-lexname', '/x/books/train.csv' + '/x/dvd/train.csv' -> 'books', 'dvd'."""
    out: dict[str, str] = {}
    paths = {}
    for s in dict.fromkeys(sources):
        if ":" in s.split("/")[0] and not PurePath(s).is_absolute():
            out[s] = s.split(":", 1)[1]
        else:
            p = PurePath(s)
            stem = p.name.split(".")[0] if p.name else s
            paths[s] = [*p.parent.parts, stem]
    if len(paths) == 1:
        (s, parts), = paths.items()
        out[s] = parts[-2] if parts[-1].lower() in _GENERIC_STEMS and len(parts) > 1 else parts[-1]
    elif paths:
        lists = list(paths.values())
        # drop trailing parts shared by all (books/train, dvd/train -> books, dvd)
        while all(len(p) > 1 for p in lists) and len({p[-1] for p in lists}) == 1:
            lists = [p[:-1] for p in lists]
        k = 1
        while k < max(len(p) for p in lists) and len({"/".join(p[-k:]) for p in lists}) < len(lists):
            k += 1
        for s, parts in zip(paths, lists):
            out[s] = "/".join(p for p in parts[-k:] if p != "/") or s
    taken: dict[str, int] = {}
    for s in list(out):                      # a builtin and a file may still clash
        name = out[s]
        taken[name] = taken.get(name, 0) + 1
        if taken[name] > 1:
            out[s] = f"{name}#{taken[name]}"
    return out


def dataset_table(runs: Sequence[Run], metric: str = "accuracy", split: str = "test",
                  ignore: Sequence[str] = ()) -> Table:
    """Rows = configurations (runs equal but for the dataset, seed, fold, name, group), columns =
    datasets (short names of data.source, sorted), cell = mean (± std) of `split` `metric` over the runs.

    Per dataset column D the row has ``D`` (formatted), ``D_mean``, ``D_std``, ``D_n``; ``avg`` is the
    mean over datasets (``avg_mean``; ``avg_std`` is the std over seeds of the per-seed average when
    every seed ran on every dataset), missing when the configuration lacks a dataset."""
    facts = _facts(runs)
    names = short_names([f.flat.get("data.source", "") for f in facts])
    datasets = sorted(dict.fromkeys(names[f.flat.get("data.source", "")] for f in facts))
    ign = tuple(REPLICATE_KEYS) + DATASET_KEYS + tuple(ignore)
    groups = _group(facts, ign)
    varied, fixed = _varied_fixed([g[0].flat for g in groups], ign)
    rows, warnings = [], []
    for g in groups:
        row = {k: g[0].flat.get(k) for k in varied}
        row["config"] = _label(g[0].flat, varied) if varied else _config_label(g)
        row["n"] = len(g)
        per_ds: dict[str, list[_Facts]] = {}
        for f in g:
            per_ds.setdefault(names[f.flat.get("data.source", "")], []).append(f)
        means = []
        for ds in datasets:
            fs = per_ds.get(ds, [])
            row.update(_stat_fields(ds, [f.value(split, metric) for f in fs], len(fs)))
            means.append(row[f"{ds}_mean"])
        # per replicate (seed, fold): the average over datasets
        reps: dict[tuple, dict[str, list[float]]] = {}
        for f in g:
            v = f.value(split, metric)
            if v is not None:
                reps.setdefault((f.seed, f.fold), {}).setdefault(names[f.flat.get("data.source", "")], []).append(v)
        complete = [r for r in reps.values() if len(r) == len(datasets)]
        if all(m is not None for m in means) and means:
            if len(complete) == len(reps) and len(complete) >= 2:
                avgs = [float(np.mean([np.mean(v) for v in r.values()])) for r in complete]
                _, s, _ = mean_std(avgs)
            else:
                s = None
                if len(complete) < len(reps):
                    warnings.append(f"{row['config']}: not every seed ran on every dataset; "
                                    "the mean over datasets has no std")
            m = float(np.mean(means))
            row.update(avg_mean=m, avg_std=s, avg_n=len(complete), avg=fmt_pm(m, s))
        else:
            row.update(avg_mean=None, avg_std=None, avg_n=0, avg=None)
            missing = [ds for ds, m in zip(datasets, means) if m is None]
            warnings.append(f"{row['config']}: no {split} {metric} on {', '.join(missing)}; no mean over datasets")
        rows.append(row)
    columns = (_varied_columns(varied) or [("config", "config")]) + [("n", "runs")]
    columns += [(ds, ds) for ds in datasets] + [("avg", f"mean of {len(datasets)}")]
    data_columns = _varied_columns(varied) + [("config", "config"), ("n", "n")]
    for ds in datasets + ["avg"]:
        data_columns += [(f"{ds}_mean", f"{ds}_mean"), (f"{ds}_std", f"{ds}_std"), (f"{ds}_n", f"{ds}_n")]
    sources = {names[s]: s for s in names}
    return Table(rows, columns, data_columns, title=f"{split} {metric} per dataset: mean {PM} std over seeds",
                 fixed={**fixed, "datasets": sources}, varied=varied, warnings=warnings)


# ---------------------------------------------------------------------------------------------
# 3. epochs side by side

EPOCH_FIELDS = (("train_loss", "train loss"), ("train_acc", "train acc"), ("val_loss", "val loss"),
                ("val_acc", "val acc"))


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Short labels telling runs apart: the config fields that differ ('lr=0.001,seed=1'), or ids."""
    facts = _facts(runs)
    varied, _ = _varied_fixed([f.flat for f in facts], ("name", "group"))
    labels = [_label(f.flat, varied) for f in facts] if varied else []
    if len(set(labels)) < len(facts) or any(len(x) > 40 for x in labels):
        labels = [f.id for f in facts]
    return labels


def epochs_side_by_side(runs: Sequence[Run] | Run, labels: Sequence[str] | None = None,
                        fields: Sequence[tuple[str, str]] = EPOCH_FIELDS) -> Table:
    """Per-epoch history (analysis.tables.epoch_table) of one or several runs, aligned by epoch.

    One run: keys ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``. Several runs:
    ``epoch`` and ``<label>/<field>`` per run (label from `labels` or `run_labels`). Evaluations that
    one run made and another did not leave that run's cells empty (None)."""
    if isinstance(runs, Run):
        runs = [runs]
    runs = list(runs)
    single = len(runs) == 1
    labels = list(labels) if labels else run_labels(runs)
    rows: dict[float, dict] = {}
    for run, lab in zip(runs, labels):
        for r in epoch_table(run):
            e = round(float(r["epoch"]), 3)
            row = rows.setdefault(e, {"epoch": e})
            for key, _ in fields:
                row[key if single else f"{lab}/{key}"] = r.get(key)
            if single:
                row["step"] = r.get("step")
    out = [rows[e] for e in sorted(rows)]
    columns = [("epoch", "epoch", 2)]
    if single:
        columns += [("step", "step")] + list(fields)
    else:
        columns += [(f"{lab}/{key}", f"{lab} {head}") for lab in labels for key, head in fields]
    return Table(out, columns, title="per-epoch metrics" if single else "per-epoch metrics, side by side")


# ---------------------------------------------------------------------------------------------
# 4. checkpoints


def checkpoint_table(run: Run, metrics: Sequence[str] = METRICS) -> Table:
    """One row per evaluated step: the validation event of that step, the final 'test' event (at the
    best step) and every re-evaluation event whose split is 'eval:<split>'.

    Row fields: ``step``, ``epoch``, ``checkpoint`` (e.g. 'step-40'), ``on_disk`` (checkpoint still
    stored), ``best`` (the checkpoint fit picked), and ``<split>/<metric>`` for each split seen
    ('validation', 'test', 'eval:test', ...) and metric in `metrics`. A repeated step keeps the newest."""
    f = _facts([run])[0]
    rows: dict[int, dict] = {}
    splits: list[str] = []
    for ev in f.events:
        split = ev.get("split", "")
        if not (split in ("validation", "test") or split.startswith("eval:")):
            continue
        step = ev.get("step")
        if step is None:
            continue
        if split not in splits:
            splits.append(split)
        row = rows.setdefault(step, {"step": step, "epoch": ev.get("epoch"), "checkpoint": f"step-{step}"})
        if ev.get("epoch") is not None and split == "validation":
            row["epoch"] = ev["epoch"]
        ck = (ev.get("detail") or {}).get("checkpoint")
        if ck:
            row["checkpoint"] = ck
        for m in metrics:
            row[f"{split}/{m}"] = ev.get("metrics", {}).get(m)
    on_disk = {p.name for p in run.checkpoints}
    test = f.last("test")
    best_step = test.get("step") if test else None
    if best_step is None and f.info.get("best_metric"):
        ev = f.best_event(f.info["best_metric"])
        best_step = ev.get("step") if ev else None
    out = []
    for step in sorted(rows):
        r = rows[step]
        r["on_disk"] = r["checkpoint"] in on_disk
        r["best"] = step == best_step
        out.append(r)
    order = {"validation": 0, "test": 1}
    first = {s: i for i, s in enumerate(splits)}
    splits = sorted(splits, key=lambda s: (order.get(s, 2), first[s]))
    columns = [("step", "step"), ("epoch", "epoch", 2), ("checkpoint", "checkpoint"), ("on_disk", "on disk"),
               ("best", "best")]
    columns += [(f"{s}/{m}", f"{s} {SHORT_METRIC.get(m, m)}") for s in splits for m in metrics]
    return Table(out, columns, title=f"checkpoints of {run.id}")


# ---------------------------------------------------------------------------------------------
# 5. paired comparison


@dataclass
class Paired:
    """Result of `paired`: side a vs side b on the same seeds/folds, difference = b - a."""
    metric: str
    split: str
    label_a: str
    label_b: str
    n: int
    mean_a: float | None
    mean_b: float | None
    std_a: float | None
    std_b: float | None
    diff_mean: float | None
    diff_std: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    t: float | None
    df: int | None
    p_t: float | None
    p_perm: float | None
    tests: list[dict]
    pairs: list[dict]
    unmatched: list[dict]
    differs: dict[str, tuple]
    warnings: list[str]

    def summary(self) -> dict:
        """One flat row: n, means, difference, CI and both p-values (names in test_t/test_perm)."""
        return {"a": self.label_a, "b": self.label_b, "metric": self.metric, "split": self.split, "n": self.n,
                "mean_a": self.mean_a, "std_a": self.std_a, "mean_b": self.mean_b, "std_b": self.std_b,
                "diff_mean": self.diff_mean, "diff_std": self.diff_std, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "confidence": self.confidence, "t": self.t, "df": self.df,
                "p_t": self.p_t, "test_t": self.tests[0]["test"], "p_perm": self.p_perm,
                "test_perm": self.tests[1]["test"], "unmatched": len(self.unmatched)}

    def summary_table(self) -> Table:
        pct = f"{self.confidence:.0%}"
        rows = [
            {"quantity": f"mean a ({self.label_a})", "value": fmt_pm(self.mean_a, self.std_a)},
            {"quantity": f"mean b ({self.label_b})", "value": fmt_pm(self.mean_b, self.std_b)},
            {"quantity": "mean difference b - a", "value": fmt_pm(self.diff_mean, self.diff_std)},
            {"quantity": f"{pct} CI of the difference (t)",
             "value": None if self.ci_low is None else f"[{self.ci_low:.4f}, {self.ci_high:.4f}]"},
            {"quantity": "pairs", "value": str(self.n)},
        ]
        return Table(rows, [("quantity", "quantity"), ("value", f"{self.split} {self.metric}")],
                     title=f"{self.label_b} vs {self.label_a}: {self.split} {self.metric}")

    def tests_table(self) -> Table:
        return Table([dict(t) for t in self.tests],
                     [("test", "test"), ("statistic", "statistic"), ("df", "df"), ("p_value", "p")],
                     title="tests of mean difference = 0")

    def pairs_table(self) -> Table:
        cols = [("seed", "seed"), ("fold", "fold"), ("a", self.label_a), ("b", self.label_b), ("diff", "b - a"),
                ("a_id", "run a"), ("b_id", "run b")]
        if all(p.get("fold") is None for p in self.pairs):
            cols.remove(("fold", "fold"))
        return Table(list(self.pairs), cols, title="pairs (matched by train.seed, data.fold)")

    def unmatched_table(self) -> Table:
        return Table(list(self.unmatched), [("side", "side"), ("id", "run"), ("seed", "seed"), ("fold", "fold"),
                                            ("reason", "reason")], title="runs left out")

    def to_dict(self) -> dict:
        return {**self.summary(), "tests": self.tests, "pairs": self.pairs, "unmatched": self.unmatched,
                "differs": {k: list(v) for k, v in self.differs.items()}, "warnings": self.warnings}

    def text(self) -> str:
        """A few lines for humans: the difference, its CI, both tests by name, the warnings."""
        lines = [f"{self.split} {self.metric}: b = {self.label_b} vs a = {self.label_a}, {self.n} pairs "
                 "matched by (train.seed, data.fold)"]
        if self.n:
            lines.append(f"  a {fmt_pm(self.mean_a, self.std_a)}   b {fmt_pm(self.mean_b, self.std_b)}   "
                         f"b - a {self.diff_mean:+.4f}")
        if self.ci_low is not None:
            lines.append(f"  {self.confidence:.0%} CI of b - a: [{self.ci_low:+.4f}, {self.ci_high:+.4f}]")
        for t in self.tests:
            if t["p_value"] is not None:
                stat = "" if t["df"] is None else f"t = {t['statistic']:.3f}, df = {t['df']}, "
                lines.append(f"  {t['test']}: {stat}p = {t['p_value']:.4g}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def paired(runs_a: Sequence[Run], runs_b: Sequence[Run], metric: str = "accuracy", split: str = "test",
           labels: tuple[str, str] | None = None, confidence: float = 0.95, max_exact: int = 16,
           n_random: int = 20000, seed: int = 0) -> Paired:
    """Compare two configurations run on the same seeds (and folds): runs are paired by
    (train.seed, data.fold); the difference is b - a of `split` `metric` ('test' = the test event,
    'validation' = best validation value, any other split = its last event, e.g. 'eval:test').

    Reports the paired t-test (scipy.stats.ttest_rel) with a t confidence interval and the sign-flip
    permutation test (exact over all 2^n sign patterns for n <= max_exact, else `n_random` random
    flips with a fixed seed). Runs without a partner or without the metric are listed in
    ``unmatched`` and warned about, as is n < 3."""
    fa, fb = _facts(runs_a), _facts(runs_b)
    warnings: list[str] = []
    unmatched: list[dict] = []

    def side(facts: list[_Facts], name: str) -> dict[tuple, _Facts]:
        out: dict[tuple, _Facts] = {}
        for f in facts:
            key = (f.seed, f.fold)
            if f.value(split, metric) is None:
                unmatched.append({"side": name, "id": f.id, "seed": f.seed, "fold": f.fold,
                                  "reason": f"no {split} {metric} (status {f.status})"})
                continue
            if key in out:
                old = out[key]
                unmatched.append({"side": name, "id": old.id, "seed": f.seed, "fold": f.fold,
                                  "reason": "another run of this side has the same seed/fold; newest kept"})
            out[key] = f
        return out

    a, b = side(fa, "a"), side(fb, "b")
    keys = [k for k in a if k in b]
    for name, mine, other in (("a", a, b), ("b", b, a)):
        for k, f in mine.items():
            if k not in other:
                unmatched.append({"side": name, "id": f.id, "seed": f.seed, "fold": f.fold,
                                  "reason": "no run on the other side with this seed/fold"})
    keys.sort(key=lambda k: (k[0] is None, k[0] or 0, k[1] is None, k[1] or 0))
    va = [a[k].value(split, metric) for k in keys]
    vb = [b[k].value(split, metric) for k in keys]
    pairs = [{"seed": k[0], "fold": k[1], "a": x, "b": y, "diff": y - x, "a_id": a[k].id, "b_id": b[k].id}
             for k, x, y in zip(keys, va, vb)]
    st = paired_stats(va, vb, confidence, max_exact, n_random, seed)
    if unmatched:
        warnings.append(f"{len(unmatched)} run{'s' if len(unmatched) > 1 else ''} left out (no partner or no "
                        f"{split} {metric}): " + ", ".join(f"{u['side']}:{u['id']}" for u in unmatched))
    warnings += st["warnings"]

    # what the comparison is about: config keys that differ between the sides
    ign = REPLICATE_KEYS
    ga, gb = _group(fa, ign), _group(fb, ign)
    for name, g in (("a", ga), ("b", gb)):
        if len(g) > 1:
            v, _ = _varied_fixed([x[0].flat for x in g], ign)
            warnings.append(f"side {name} mixes {len(g)} configurations (differing in {', '.join(v)})")
    differs: dict[str, tuple] = {}
    if ga and gb:
        varied, _ = _varied_fixed([ga[0][0].flat, gb[0][0].flat], ign)
        differs = {k: (ga[0][0].flat.get(k), gb[0][0].flat.get(k)) for k in varied}
    if labels is None:
        if differs and len(differs) <= 2:
            labels = (_label({k: v[0] for k, v in differs.items()}, list(differs)),
                      _label({k: v[1] for k, v in differs.items()}, list(differs)))
        else:
            labels = ("a", "b")
    return Paired(metric=metric, split=split, label_a=labels[0], label_b=labels[1], n=st["n"],
                  mean_a=st["mean_a"], mean_b=st["mean_b"], std_a=st["std_a"], std_b=st["std_b"],
                  diff_mean=st["diff_mean"], diff_std=st["diff_std"], ci_low=st["ci_low"], ci_high=st["ci_high"],
                  confidence=confidence, t=st["t"], df=st["df"], p_t=st["p_t"], p_perm=st["p_perm"],
                  tests=st["tests"], pairs=pairs, unmatched=unmatched, differs=differs, warnings=warnings)
