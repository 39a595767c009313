"""Statistics for many configurations: Holm's correction when one table ranks more than two,
the number of seeds needed to detect a named difference, and the Friedman test with a Nemenyi
critical-difference diagram across datasets.

`compare` and `report` show the Friedman test (`across_datasets`) when the runs span several
datasets, the Holm ranking otherwise.

Libraries: the Friedman test is `scipy.stats.friedmanchisquare`; the Nemenyi critical difference
uses `scipy.stats.studentized_range`; the paired tests come from `analysis.stats` (scipy's
`ttest_rel`); the seeds-needed estimate uses `scipy.stats.norm`. Holm's step-down adjustment is
the few lines below (scipy has no Holm), checked against hand-computed values in the tests."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from encoderlab.analysis.facts import read_facts
from encoderlab.metrics import LOWER_IS_BETTER
from encoderlab.analysis.configs import DATASET_KEYS, REPLICATE_KEYS, group, label, varied_fixed
from encoderlab.analysis.render import Table
from encoderlab.analysis.stats import fmt_pm, mean_std, paired_stats
from encoderlab.store.runs import Run

HOLM_NOTE = ("p-values of each configuration vs the best are Holm-corrected for the {m} comparisons "
             "(family-wise error rate; p_holm, not the raw p_t, is what to read)")


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (step-down): sort the m p-values ascending, multiply the
    i-th (0-based) by m - i, take the running maximum, cap at 1; None stays None (not counted)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def seeds_needed(std: float, detect: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Seeds per configuration to detect a true difference `detect` between two configurations
    whose scores vary over seeds with standard deviation `std` (two-sided two-sample z test):
    n = ceil(2 * (z_{1-alpha/2} + z_{power})^2 * std^2 / detect^2), at least 2."""
    from scipy.stats import norm
    if std is None or detect <= 0:
        return None
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return max(2, math.ceil(2 * (z * std / detect) ** 2))


def ranking_table(runs: Sequence[Run], metric: str = "accuracy", split: str = "test",
                  detect: float | None = None) -> Table:
    """Configurations ranked by mean `split` `metric`; each compared with the best by the paired
    t-test over matched seeds, p-values Holm-corrected when there are more than two; with
    `detect`, the seeds needed for that difference from the pooled seed spread."""
    facts = [f for f in read_facts(runs) if f.value(split, metric) is not None]
    groups = group(facts, REPLICATE_KEYS)
    varied, _ = varied_fixed([g[0].flat for g in groups], REPLICATE_KEYS) if groups else ([], {})
    rows = []
    for g in groups:
        vals = {(f.seed, f.fold): f.value(split, metric) for f in g}
        m, s, n = mean_std(vals.values())
        rows.append({"config": label(g[0].flat, varied) if varied else g[0].name, "mean": m, "std": s, "n": n,
                     "value": fmt_pm(m, s), "_vals": vals})
    lower = metric in LOWER_IS_BETTER
    rows.sort(key=lambda r: r["mean"], reverse=not lower)
    warnings = []
    if rows:
        best = rows[0]
        for i, r in enumerate(rows):
            r["rank"] = i + 1
            if i == 0:
                r["p_t"] = None
                continue
            keys = sorted(set(best["_vals"]) & set(r["_vals"]), key=str)
            if len(keys) >= 2:
                st = paired_stats([r["_vals"][k] for k in keys], [best["_vals"][k] for k in keys])
                r["p_t"] = st["p_t"]
            else:
                r["p_t"] = None
        ps = holm([r["p_t"] for r in rows[1:]])
        for r, p in zip(rows[1:], ps):
            r["p_holm"] = p
        m = sum(p is not None for p in ps)
        if len(rows) > 2 and m:
            warnings.append(HOLM_NOTE.format(m=m))
    if detect:
        stds = [r["std"] for r in rows if r["std"] is not None]
        pooled = math.sqrt(sum(s * s for s in stds) / len(stds)) if stds else None
        need = seeds_needed(pooled, detect) if pooled is not None else None
        if need is not None:
            warnings.append(f"seeds needed to detect a difference of {detect:g} in {split} {metric} "
                            f"(two-sided, alpha 0.05, power 0.8, pooled seed std {pooled:.4f}): {need} per "
                            f"configuration")
        else:
            warnings.append(f"seeds needed for {detect:g}: no seed spread to estimate from (need >= 2 seeds)")
    for r in rows:
        r.pop("_vals")
    cols = [("rank", "rank"), ("config", "configuration"), ("value", f"{split} {metric}"), ("n", "seeds"),
            ("p_t", "p vs best (paired t)")]
    if len(rows) > 2:
        cols.append(("p_holm", "p vs best (Holm)"))
    t = Table(rows, cols, title=f"ranking by mean {split} {metric} over seeds")
    t.warnings = warnings
    return t


def friedman(scores: np.ndarray, names: Sequence[str], alpha: float = 0.05) -> dict:
    """Friedman test over a (datasets x configurations) score matrix (higher = better) and the
    Nemenyi critical difference of mean ranks: CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha the
    studentized range quantile (k groups, infinite df) / sqrt(2)."""
    from scipy import stats
    scores = np.asarray(scores, dtype=float)
    n, k = scores.shape
    ranks = np.vstack([stats.rankdata(-row) for row in scores])     # rank 1 = best on that dataset
    mean_ranks = ranks.mean(0)
    out = {"datasets": n, "configurations": k, "names": list(names), "mean_ranks": mean_ranks.tolist(),
           "statistic": None, "p_value": None, "cd": None, "alpha": alpha,
           "test": "Friedman test (scipy.stats.friedmanchisquare); Nemenyi critical difference "
                   "(scipy.stats.studentized_range)"}
    if k >= 3 and n >= 2:
        res = stats.friedmanchisquare(*scores.T)
        out.update(statistic=float(res.statistic), p_value=float(res.pvalue))
        # the smallest p any data can give: every dataset ranks the configurations the same way
        out["p_floor"] = float(stats.chi2.sf(n * (k - 1), k - 1))
        q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
        out["cd"] = float(q * math.sqrt(k * (k + 1) / (6 * n)))
    return out


def untold(mean_ranks: Sequence[float], cd: float) -> list[tuple[float, float]]:
    """The (lowest, highest) mean rank of each maximal group of configurations whose mean ranks
    all lie within `cd` of each other (the thick lines of the diagram); a group inside another
    is left out."""
    ranks = sorted(mean_ranks)
    out, reach = [], -math.inf
    for lo in ranks:
        hi = max(r for r in ranks if lo <= r < lo + cd)
        if hi > lo and hi > reach:
            out.append((lo, hi))
            reach = hi
    return out


def cd_diagram(result: dict) -> bytes:
    """The critical-difference diagram: configurations on a mean-rank axis (1 = best, left), a bar
    of length CD, and thick lines joining configurations whose mean ranks differ by less than CD."""
    from encoderlab.analysis.plots import png, pyplot
    plt = pyplot()
    names, ranks, cd = result["names"], np.asarray(result["mean_ranks"]), result["cd"]
    k = len(names)
    order = np.argsort(ranks)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * k))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k + 1), 2)
    ax.invert_xaxis()
    ax.axhline(0, color="black", lw=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [0, 0.15], color="black", lw=1)
        ax.text(r, 0.3, str(r), ha="center", fontsize=8)
    for row, i in enumerate(order):
        y = -(row + 1)
        ax.plot([ranks[i], ranks[i]], [0, y], color="grey", lw=0.8)
        ax.text(ranks[i], y, f" {names[i]} ({ranks[i]:.2f})", va="center", fontsize=8,
                ha="right" if ranks[i] > (k + 1) / 2 else "left")
    if cd:
        ax.plot([1, 1 + cd], [1.2, 1.2], color="black", lw=2)
        ax.text(1 + cd / 2, 1.4, f"CD = {cd:.2f}", ha="center", fontsize=8)
        for n, (lo, hi) in enumerate(untold(ranks, cd)):
            ax.plot([lo, hi], [-0.5 - 0.25 * n, -0.5 - 0.25 * n], color="black", lw=3)
    ax.axis("off")
    title = "critical difference (Nemenyi)"
    if result["p_value"] is not None:
        title += f"; Friedman p = {result['p_value']:.3g}, {result['datasets']} datasets"
    ax.set_title(title, fontsize=9)
    return png(fig)


def dataset_matrix(runs: Sequence[Run], metric: str = "accuracy", split: str = "test"):
    """(scores (datasets x configurations), config names, dataset names): each cell the mean over
    seeds; a configuration is the runs equal but for the dataset (`DATASET_KEYS`: source and its
    columns) and the replicate keys; only configurations scored on every dataset are kept."""
    from encoderlab.analysis.compare import short_names
    facts = [f for f in read_facts(runs) if f.value(split, metric) is not None]
    short = short_names([f.flat.get("data.source", "") for f in facts])
    keys = tuple(REPLICATE_KEYS) + tuple(DATASET_KEYS)
    groups = group(facts, keys)
    varied, _ = varied_fixed([g[0].flat for g in groups], keys) if groups else ([], {})
    cells: dict[str, dict[str, float]] = {}
    for g in groups:
        name = label(g[0].flat, varied) if varied else str(g[0].flat.get("name") or g[0].id)
        for ds in {short[f.flat.get("data.source", "")] for f in g}:
            vals = [f.value(split, metric) for f in g if short[f.flat.get("data.source", "")] == ds]
            cells.setdefault(name, {})[ds] = float(np.mean(vals))
    datasets = sorted({d for c in cells.values() for d in c})
    names = [n for n, c in cells.items() if all(d in c for d in datasets)]
    scores = np.array([[cells[n][d] for n in names] for d in datasets]) if names else np.zeros((0, 0))
    if metric in LOWER_IS_BETTER:
        scores = -scores
    return scores, names, datasets


def across_datasets(runs: Sequence[Run], metric: str = "accuracy", split: str = "test") -> dict | None:
    """`friedman` over the runs' configurations x datasets (with the dataset names, metric and
    split), or None when the runs do not span two or more datasets."""
    scores, names, datasets = dataset_matrix(runs, metric, split)
    if len(datasets) < 2:
        return None
    if not names:
        scores = np.zeros((len(datasets), 0))
    res = friedman(scores, names)
    res.update(dataset_names=datasets, metric=metric, split=split,
               scores=(-scores if metric in LOWER_IS_BETTER else scores).tolist())
    return res


def friedman_line(res: dict) -> str:
    """The one-line verdict of `across_datasets`: statistic, p, N datasets, k configurations and
    the library that computed them."""
    n, k, what = res["datasets"], res["configurations"], f"{res['split']} {res['metric']}"
    if res["p_value"] is None:
        return (f"Friedman test: needs >= 3 configurations scored on every one of the {n} datasets, found {k} "
                "(compare two with `compare --paired`)")
    return (f"Friedman test over N = {n} datasets x k = {k} configurations ({what}, mean over seeds): "
            f"chi2 = {res['statistic']:.3f}, p = {res['p_value']:.3g} (scipy.stats.friedmanchisquare); "
            f"Nemenyi critical difference {res['cd']:.2f} mean ranks at alpha {res['alpha']:g} "
            "(scipy.stats.studentized_range): configurations whose mean ranks differ by less are not told apart"
            + (f"; with {n} datasets even identical rankings on all of them give p = {res['p_floor']:.3g}: "
               f"add datasets to reach {res['alpha']:g}" if res.get("p_floor", 0) > res["alpha"] else ""))


def friedman_table(res: dict) -> Table:
    """Configurations by mean rank across datasets (1 = best), each dataset's score beside it;
    the Friedman line as its note."""
    rows = []
    for j, name in enumerate(res["names"]):
        row = {"config": name, "mean_rank": res["mean_ranks"][j]}
        row.update({ds: res["scores"][i][j] for i, ds in enumerate(res["dataset_names"])})
        rows.append(row)
    rows.sort(key=lambda r: r["mean_rank"])
    cols = [("config", "configuration"), ("mean_rank", "mean rank")] + [(d, d) for d in res["dataset_names"]]
    t = Table(rows, cols, title=f"mean rank across {res['datasets']} datasets by {res['split']} {res['metric']} "
                                "(1 = best on a dataset)")
    t.warnings = [friedman_line(res)]
    return t


def pruned_table(runs: Sequence[Run]) -> Table:
    """Runs a search pruned, apart from the compared ones: where each stopped and why."""
    rows = []
    for f in read_facts(runs):
        vals = f.validations()
        rows.append({"run": f.id, "name": f.info.get("name"), "step": f.info.get("steps_done"),
                     "evaluations": len(vals),
                     "last_val_accuracy": vals[-1]["metrics"].get("accuracy") if vals else None,
                     "why": f.info.get("message")})
    return Table(rows, [("run", "run"), ("name", "name"), ("step", "step"), ("evaluations", "evaluations"),
                        ("last_val_accuracy", "last val accuracy"), ("why", "why pruned")],
                 title=f"{len(rows)} pruned run{'s' if len(rows) != 1 else ''} (stopped early by a search; "
                       "not in the comparison)")


def extra_tables(runs: Sequence[Run], pruned: Sequence[Run], metric: str = "accuracy", split: str = "test",
                 detect: float | None = None) -> list[Table]:
    """What `compare` shows after the configuration table: across several datasets the Friedman
    test on the configurations' mean ranks; else the Holm-corrected ranking when more than two
    configurations are compared (or a `detect` difference is named); then the pruned runs."""
    out = []
    res = across_datasets(runs, metric, split)
    if res is not None:
        out.append(friedman_table(res))
    elif len(group(read_facts(runs), REPLICATE_KEYS)) > 2 or detect:
        out.append(ranking_table(runs, metric, split, detect))
    if pruned:
        out.append(pruned_table(pruned))
    return out
