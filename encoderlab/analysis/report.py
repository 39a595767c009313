"""Reports: one self-contained HTML file (plots embedded as PNG data URIs) or Markdown + PNGs.

Read only from the run store: comparison table, learning curves (mean line and min-max band over
the seeds/folds of each configuration), confusion matrix of the best run, diagnostics and the
resolved configs. Every user-provided string goes through `html.escape`."""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from encoderlab import config as C
from encoderlab import kinds
from encoderlab.analysis import compare as CMP
from encoderlab.analysis.findings import FINDING_COLUMNS
from encoderlab.analysis.plots import png, pyplot
from encoderlab.analysis import render as R
from encoderlab.analysis import tradeoff as TO
from encoderlab.metrics import LOWER_IS_BETTER
from encoderlab.analysis.tables import epoch_table
from encoderlab.store.runs import Run


def configurations(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped into configurations (as in the comparison table), by their row label."""
    table = CMP.config_table(runs)
    by_id = {r.id: r for r in runs}
    return {str(row["config"]): [by_id[i] for i in row["runs"]] for row in table.rows}


def learning_curves(runs: Sequence[Run]) -> bytes:
    """2x2 panels (train/val x loss/accuracy) per epoch: one line per configuration = mean over its
    runs, shaded band = min..max over seeds/folds."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    panels = [("train_loss", "train loss"), ("val_loss", "validation loss"),
              ("train_acc", "train accuracy"), ("val_acc", "validation accuracy")]
    for label, group in configurations(runs).items():
        per_epoch: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        for run in group:
            for row in epoch_table(run):
                for key, _ in panels:
                    if row.get(key) is not None and np.isfinite(row[key]):
                        per_epoch[key][round(row["epoch"], 2)].append(row[key])
        color = None
        for ax, (key, title) in zip(axes.flat, panels):
            epochs = sorted(per_epoch[key])
            if not epochs:
                continue
            vals = [per_epoch[key][e] for e in epochs]
            mean = [float(np.mean(v)) for v in vals]
            line, = ax.plot(epochs, mean, marker="o", ms=3, label=f"{label} (n={len(group)})", color=color)
            color = line.get_color()
            if len(group) > 1:
                ax.fill_between(epochs, [min(v) for v in vals], [max(v) for v in vals], color=color, alpha=0.15)
            ax.set_title(title)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(labels) // 3)))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return png(fig)


def best_run(runs: Sequence[Run]) -> Run | None:
    scored = [(r.info.get("best_value"), r) for r in runs
              if r.info.get("best_value") is not None and (r.dir / "predictions" / "test.csv").exists()]
    if not scored:
        return None
    metric = runs[0].info.get("best_metric", "accuracy")
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(scored, key=lambda t: t[0])[1]


def confusion_plot(run: Run, split: str = "test") -> bytes:
    """Row-normalised confusion matrix of a run's stored predictions."""
    import pandas as pd
    plt = pyplot()
    df = pd.read_csv(run.dir / "predictions" / f"{split}.csv", keep_default_na=False, dtype=str)
    names = run.labels()
    idx = {n: i for i, n in enumerate(names)}
    k = len(names)
    cm = np.zeros((k, k))
    for t, p in zip(df["label"], df["predicted"]):
        if t in idx and p in idx:
            cm[idx[t], idx[p]] += 1
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(14, 3 + 0.28 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=90, fontsize=7 if k > 12 else 9)
    ax.set_yticks(range(k), names, fontsize=7 if k > 12 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the true class")
    ax.set_title(f"{split} confusion, run {run.id}")
    return png(fig)


def _diagnostics(runs: Sequence[Run]) -> list[dict]:
    """[{run, code, severity, title, evidence, fix}] for every run, plus group-level findings."""
    try:
        from encoderlab.analysis import diagnose as D
    except ImportError:
        return []
    out = []
    for run in runs:
        for f in D.load_or_compute(run):
            out.append({"run": run.id, **_finding(f)})
    for f in D.diagnose_group(list(runs)):
        out.append({"run": "(group)", **_finding(f)})
    return out


def _finding(f) -> dict:
    d = f if isinstance(f, dict) else f.__dict__
    return {k: d.get(k) for k in ("code", "severity", "title", "evidence", "fix")}


def _sections(runs: Sequence[Run]):
    """The report's content, shared by the HTML and Markdown writers."""
    table = CMP.config_table(runs)
    diag = _diagnostics(runs)
    best = best_run(runs)
    plots = {"curves": learning_curves(runs)}
    if best is not None:
        plots["confusion"] = confusion_plot(best)
    cost = TO.table(runs)
    if cost[0]:
        plots["pareto"] = TO.pareto_plot(cost[0])
    return table, diag, best, plots, cost, _ranking(runs)


def _search(runs: Sequence[Run]):
    """The search section when the runs' group was made by a search (`encoderlab.search`)."""
    from encoderlab.analysis import searchreport
    return searchreport.section(runs)


def _datasets(runs: Sequence[Run]):
    """Across several datasets: (the Friedman test result, its mean-rank table, the critical-
    difference diagram PNG or None when there are fewer than 3 configurations), else None."""
    from encoderlab.analysis import multi
    from encoderlab.tasks import metric_for_runs
    done = [r for r in runs if r.status == "completed"]
    res = multi.across_datasets(done, metric_for_runs(done)) if done else None
    if res is None:
        return None
    return res, multi.friedman_table(res), multi.cd_diagram(res) if res["cd"] is not None else None


def _pruned(runs: Sequence[Run]):
    from encoderlab.analysis import multi
    pruned = [r for r in runs if r.status == "pruned"]
    return multi.pruned_table(pruned) if pruned else None


def _ranking(runs: Sequence[Run]):
    """Ranking runs: test accuracy@1 per held-out domain and the mean over domains (rank-table)."""
    ranked = [r for r in runs if kinds.kind_of(r) == "ranking" and r.status == "completed"]
    if not ranked:
        return None
    from encoderlab.analysis import ranking as AR
    return AR.domain_table(ranked)


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}.error{color:#b00020;font-weight:600}
.warning{color:#a15c00;font-weight:600}.info{color:#555}pre{background:#f7f7f7;padding:.6em;overflow:auto;
font-size:12px}img{max-width:100%}details{margin:.3em 0}.muted{color:#666;font-size:13px}"""


def write_html(runs: Sequence[Run], path: str | Path, title: str = "encoderlab report") -> Path:
    runs = list(runs)
    table, diag, best, plots, cost, ranking = _sections(runs)
    e = html.escape
    img = {k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in plots.items()}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>",
             f"<p class='muted'>{len(runs)} runs; generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}</p>",
             "<h2>Comparison</h2>", f"<p class='muted'>{e(table.title)}</p>", R.to_html(table.rows, table.columns)]
    if table.fixed:
        parts.append(f"<p>Fixed settings: {e(_fixed_line(table.fixed))}</p>")
    for w in table.warnings:
        parts.append(f"<p class='warning'>{e(w)}</p>")
    if ranking is not None:
        parts += ["<h2>Ranking: held-out domains</h2>", f"<p class='muted'>{e(ranking.title)}</p>",
                  R.to_html(ranking.rows, ranking.columns)]
    across = _datasets(runs)
    if across is not None:
        res, ranks, cd_png = across
        parts += ["<h2 id='datasets'>Across datasets: Friedman test and critical difference</h2>",
                  f"<p class='info'>{e(ranks.warnings[0])}</p>", f"<p class='muted'>{e(ranks.title)}</p>",
                  R.to_html(ranks.rows, ranks.columns)]
        if cd_png is not None:
            parts.append("<img alt='critical difference diagram' src='data:image/png;base64,"
                         + base64.b64encode(cd_png).decode() + "'>")
    search, pruned = _search(runs), _pruned(runs)
    if search is not None:
        parts += [f"<h2 id='search'>Search: {e(search.group)}</h2>", f"<p class='muted'>{e(search.best.title)}</p>",
                  R.to_html(search.best.rows, search.best.columns)]
        if search.importance is not None:
            parts += [f"<p class='muted'>{e(search.importance.title)}</p>",
                      R.to_html(search.importance.rows, search.importance.columns)]
        parts += [f"<p class='muted'>{e(search.compute.title)}</p>",
                  R.to_html(search.compute.rows, search.compute.columns),
                  "<img alt='slice plot' src='data:image/png;base64,"
                  + base64.b64encode(search.slice_png).decode() + "'>"]
        parts += [f"<p class='info'>{e(n)}</p>" for n in search.notes]
    if pruned is not None:
        parts += ["<h2 id='pruned'>Pruned runs</h2>", f"<p class='muted'>{e(pruned.title)}</p>",
                  R.to_html(pruned.rows, pruned.columns)]
    parts += ["<h2>Learning curves</h2>", "<p class='muted'>mean over the runs of each configuration; "
              "band = min..max over seeds/folds</p>", f"<img alt='learning curves' src='{img['curves']}'>"]
    if cost[0]:
        parts += ["<h2>Cost trade-off</h2>", f"<p class='muted'>{e(TO.caption(cost[1]))}</p>",
                  R.to_html(cost[0], TO.COLUMNS), f"<img alt='Pareto plot' src='{img['pareto']}'>"]
    parts.append("<h2>Diagnostics</h2>")
    flagged = [d for d in diag if d["severity"] in ("error", "warning")]
    parts.append(R.to_html(flagged, FINDING_COLUMNS) if flagged else "<p>No problems found.</p>")
    if best is not None:
        parts += [f"<h2>Best run: {e(best.id)}</h2>",
                  f"<p>validation {e(str(best.info.get('best_metric')))} = {best.info.get('best_value', 0):.4f}, "
                  f"test accuracy = {best.info.get('test_accuracy') or 0:.4f}</p>",
                  f"<img alt='confusion matrix' src='{img['confusion']}'>"]
    parts.append("<h2>Runs and resolved configs</h2>")
    for run in runs:
        info = run.info
        cfg = (run.dir / "config.toml").read_text()
        parts.append(f"<details><summary>{e(run.id)} — {e(str(info.get('status')))}, test accuracy "
                     f"{e(R.format_value(info.get('test_accuracy')))}"
                     f"</summary><pre>{e(cfg)}</pre></details>")
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _changed(fixed: dict) -> dict:
    """The settings equal in all runs that are not at their default (the rest would list every key of
    every section, ranking and series included, for a plain fine-tuning sweep)."""
    default = C.flatten(C.to_dict(C.ExperimentConfig()))
    return {k: v for k, v in fixed.items() if k not in default or default[k] != v}


def _fixed_line(fixed: dict) -> str:
    changed = _changed(fixed)
    shown = ", ".join(f"{k} = {v}" for k, v in changed.items()) or "none"
    return f"{shown} (every other setting at its default)"


def write_markdown(runs: Sequence[Run], path: str | Path, title: str = "encoderlab report") -> Path:
    """Markdown with the tables inline and the plots as PNG files in `<name>_files/` beside it."""
    runs = list(runs)
    table, diag, best, plots, cost, ranking = _sections(runs)
    path = Path(path)
    files = path.with_name(path.stem + "_files")
    files.mkdir(parents=True, exist_ok=True)
    for k, v in plots.items():
        (files / f"{k}.png").write_bytes(v)
    rel = files.name
    out = [f"# {title}", "", f"{len(runs)} runs.", "", "## Comparison", "",
           table.render("markdown").strip(), ""]
    if table.fixed:
        out += ["Fixed settings: " + _fixed_line(table.fixed), ""]
    if ranking is not None:
        out += ["## Ranking: held-out domains", "", ranking.render("markdown").strip(), ""]
    across = _datasets(runs)
    if across is not None:
        res, ranks, cd_png = across
        out += ["## Across datasets: Friedman test and critical difference", "", ranks.warnings[0], "",
                ranks.render("markdown").strip(), ""]
        if cd_png is not None:
            (files / "cd.png").write_bytes(cd_png)
            out += [f"![critical difference diagram]({rel}/cd.png)", ""]
    search, pruned = _search(runs), _pruned(runs)
    if search is not None:
        (files / "slice.png").write_bytes(search.slice_png)
        out += [f"## Search: {search.group}", "", search.best.render("markdown").strip(), ""]
        if search.importance is not None:
            out += [search.importance.render("markdown").strip(), ""]
        out += [search.compute.render("markdown").strip(), "", f"![slice plot]({rel}/slice.png)", ""]
    if pruned is not None:
        out += ["## Pruned runs", "", pruned.render("markdown").strip(), ""]
    out += ["## Learning curves", "", "Mean over the runs of each configuration; band = min..max over seeds.",
            "", f"![learning curves]({rel}/curves.png)", ""]
    if cost[0]:
        out += ["## Cost trade-off", "", TO.caption(cost[1]), "", R.render(cost[0], TO.COLUMNS, "markdown").strip(),
                "", f"![Pareto plot]({rel}/pareto.png)", ""]
    out += ["## Diagnostics", ""]
    flagged = [d for d in diag if d["severity"] in ("error", "warning")]
    out += [R.render(flagged, FINDING_COLUMNS, "markdown").strip() if flagged else "No problems found.", ""]
    if best is not None:
        out += [f"## Best run: `{best.id}`", "", f"![confusion matrix]({rel}/confusion.png)", ""]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
