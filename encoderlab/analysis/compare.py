"""Compare stored runs in tables: configurations across seeds, datasets, epochs, checkpoints.

Everything here reads the run store (run.json, config.toml, metrics.jsonl) and never trains.
Results are `render.Table`s (row dicts plus a column spec) that the CLI prints as a terminal
table, Markdown, CSV or JSON.

Runs are grouped into configurations as `analysis.configs` defines them (equal configs once
name, group, seed, fold, threads and device are ignored). Means and standard deviations are over
those runs; the std is the sample std (ddof=1), missing when n=1.

Run selection lives in `analysis.select`, the paired comparison in `analysis.paired`; both stay
importable from here.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Sequence

import numpy as np

from encoderlab.analysis.configs import (DATASET_KEYS, REPLICATE_KEYS, fixed_rows, group, label,
                                         varied_fixed)
from encoderlab.analysis.facts import RunFacts, read_facts
from encoderlab.analysis.paired import Paired, paired
from encoderlab.analysis.render import Table
from encoderlab.analysis.select import distinct, select, split_by
from encoderlab.analysis.stats import PM, fmt_pm, mean_std
from encoderlab.analysis.tables import epoch_table
from encoderlab.store.runs import Run

__all__ = ["DATASET_KEYS", "EPOCH_FIELDS", "METRICS", "REPLICATE_KEYS", "SHORT_METRIC", "Paired", "Table",
           "checkpoint_table", "config_table", "dataset_table", "distinct", "epochs_side_by_side",
           "fixed_rows", "paired", "run_labels", "select", "short_names", "split_by"]

METRICS = ("loss", "accuracy", "macro_f1")
SHORT_METRIC = {"accuracy": "acc", "macro_f1": "F1", "loss": "loss"}


def _stat_fields(prefix: str, values: list, of: int) -> dict:
    m, s, n = mean_std(values)
    return {f"{prefix}_mean": m, f"{prefix}_std": s, f"{prefix}_n": n, prefix: fmt_pm(m, s, n, of)}


# ---------------------------------------------------------------------------------------------
# 1. configurations across seeds


def _status_counts(facts: list[RunFacts]) -> str:
    counts: dict[str, int] = {}
    for f in facts:
        counts[f.status] = counts.get(f.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _replicates(facts: list[RunFacts]) -> str:
    seeds = sorted({f.seed for f in facts if f.seed is not None})
    out = ",".join(str(s) for s in seeds)
    folds = sorted({f.fold for f in facts if f.fold is not None})
    if folds:
        out += " x folds " + ",".join(str(x) for x in folds)
    return out


def _varied_columns(varied: list[str]) -> list[tuple]:
    return [(k, k, "g") for k in varied]


def _config_name(facts: list[RunFacts]) -> str:
    names = dict.fromkeys((f.info.get("grp") or f.info.get("name") or "").split(":")[0] for f in facts)
    return ", ".join(n for n in names if n) or "runs"


def config_table(runs: Sequence[Run], metric: str = "accuracy",
                 ignore: Sequence[str] = ()) -> Table:
    """One row per configuration (runs equal but for `configs.REPLICATE_KEYS`: name, group, seed,
    fold, threads, device, and the dotted keys in `ignore`).

    Row fields: the varied config keys (dotted, as columns), ``config`` (short label), ``n`` (runs),
    ``seeds``, ``val_mean``/``val_std``/``val_n``/``val`` (best validation `metric` of each run),
    ``test_mean``/``test_std``/``test_n``/``test`` (the 'test' event), ``best_epoch`` (mean epoch of
    the best checkpoint), ``status`` (counts, e.g. "2 completed, 1 interrupted") and ``runs`` (ids).
    ``Table.fixed`` holds the fields identical for all configurations."""
    facts = read_facts(runs)
    ign = REPLICATE_KEYS + tuple(ignore)
    groups = group(facts, ign)
    varied, fixed = varied_fixed([g[0].flat for g in groups], ign)
    rows = []
    for g in groups:
        n = len(g)
        row = {k: g[0].flat.get(k) for k in varied}
        row["config"] = label(g[0].flat, varied) if varied else _config_name(g)
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


def _mean_over_datasets(g: list[RunFacts], names: dict[str, str], datasets: list[str], means: list,
                        split: str, metric: str, config: str, warnings: list[str]) -> dict:
    """``avg_*`` fields of one configuration: the mean of its per-dataset means; the std is over
    replicates (seed, fold) of the per-replicate average, when every replicate ran on every dataset."""
    reps: dict[tuple, dict[str, list[float]]] = {}
    for f in g:
        v = f.value(split, metric)
        if v is not None:
            reps.setdefault((f.seed, f.fold), {}).setdefault(names[f.flat.get("data.source", "")], []).append(v)
    complete = [r for r in reps.values() if len(r) == len(datasets)]
    if not (all(m is not None for m in means) and means):
        missing = [ds for ds, m in zip(datasets, means) if m is None]
        warnings.append(f"{config}: no {split} {metric} on {', '.join(missing)}; no mean over datasets")
        return dict(avg_mean=None, avg_std=None, avg_n=0, avg=None)
    if len(complete) == len(reps) and len(complete) >= 2:
        avgs = [float(np.mean([np.mean(v) for v in r.values()])) for r in complete]
        _, s, _ = mean_std(avgs)
    else:
        s = None
        if len(complete) < len(reps):
            warnings.append(f"{config}: not every seed ran on every dataset; the mean over datasets has no std")
    m = float(np.mean(means))
    return dict(avg_mean=m, avg_std=s, avg_n=len(complete), avg=fmt_pm(m, s))


def dataset_table(runs: Sequence[Run], metric: str = "accuracy", split: str = "test",
                  ignore: Sequence[str] = ()) -> Table:
    """Rows = configurations (runs equal but for the dataset and REPLICATE_KEYS), columns =
    datasets (short names of data.source, sorted), cell = mean (± std) of `split` `metric` over the runs.

    Per dataset column D the row has ``D`` (formatted), ``D_mean``, ``D_std``, ``D_n``; ``avg`` is the
    mean over datasets (``avg_mean``; ``avg_std`` is the std over seeds of the per-seed average when
    every seed ran on every dataset), missing when the configuration lacks a dataset."""
    facts = read_facts(runs)
    names = short_names([f.flat.get("data.source", "") for f in facts])
    datasets = sorted(dict.fromkeys(names[f.flat.get("data.source", "")] for f in facts))
    ign = REPLICATE_KEYS + DATASET_KEYS + tuple(ignore)
    groups = group(facts, ign)
    varied, fixed = varied_fixed([g[0].flat for g in groups], ign)
    rows, warnings = [], []
    for g in groups:
        row = {k: g[0].flat.get(k) for k in varied}
        row["config"] = label(g[0].flat, varied) if varied else _config_name(g)
        row["n"] = len(g)
        per_ds: dict[str, list[RunFacts]] = {}
        for f in g:
            per_ds.setdefault(names[f.flat.get("data.source", "")], []).append(f)
        means = []
        for ds in datasets:
            fs = per_ds.get(ds, [])
            row.update(_stat_fields(ds, [f.value(split, metric) for f in fs], len(fs)))
            means.append(row[f"{ds}_mean"])
        row.update(_mean_over_datasets(g, names, datasets, means, split, metric, row["config"], warnings))
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
    facts = read_facts(runs)
    varied, _ = varied_fixed([f.flat for f in facts], ("name", "group"))
    labels = [label(f.flat, varied) for f in facts] if varied else []
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
    f = read_facts([run])[0]
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
