"""Ranking tables read from the store: per-domain and mean-over-domains scores of each
configuration (mean ± std over seeds, via compare.config_table), the segment-budget table
(truncation, padding waste) and the end-to-end entity-linking table and figure."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from encoderlab.analysis.compare import config_table
from encoderlab.analysis.facts import read_facts
from encoderlab.analysis.render import Table
from encoderlab.analysis.stats import PM, fmt_pm, mean_std
from encoderlab.store.runs import Run


MAX_VARIED_COLUMNS = 4


def domains_of(runs: Sequence[Run], metric: str, split: str = "test") -> list[str]:
    """Domains named by `<metric>/<domain>` keys of the runs' `split` events."""
    out = set()
    for f in read_facts(runs):
        ev = f.last(split)
        for k in (ev or {}).get("metrics", {}):
            if k.startswith(metric + "/"):
                out.add(k.split("/", 1)[1])
    return sorted(out)


def domain_table(runs: Sequence[Run], metric: str = "accuracy", split: str = "test") -> Table:
    """One row per configuration: `metric` on each domain, the mean over domains and overall."""
    base = config_table(runs, metric)
    doms = domains_of(runs, metric, split)
    cols = [c for c in base.columns if c[0] not in ("val", "test", "best_epoch", "n", "seeds", "status")]
    data_cols = [c for c in base.data_columns if c[0] in [x[0] for x in cols]]
    key = lambda r: tuple(r["runs"])   # noqa: E731
    rows = {key(r): {**{k: r[k] for k in r if not k.startswith(("val", "test"))}} for r in base.rows}
    facts = read_facts(runs)
    exp = {f.id: f.info.get("name", "").split(":")[0] for f in facts}
    for r in rows.values():
        r["experiment"] = exp[r["runs"][0]]
    if len(base.varied) > MAX_VARIED_COLUMNS:
        # experiments (baselines, bi, cross) differ in many keys: name each row by its experiment and
        # show only the mode and the keys its sweep varies; the rest is in the experiment files
        within = [k for k in base.varied if k == "ranking.mode" or any(
            a["experiment"] == b["experiment"] and a[k] != b[k] for a in rows.values() for b in rows.values())]
        cols = [("experiment", "experiment")] + [c for c in cols if c[0] in within]
    data_cols = [("experiment", "experiment")] + data_cols
    for label, m in [(d, f"{metric}/{d}") for d in doms] + [("domain mean", f"domain_mean/{metric}"),
                                                            ("all", metric)]:
        t = config_table(runs, m)
        for r in t.rows:
            rows[key(r)].update({f"{label}": fmt_pm(r["test_mean"], r["test_std"], r["test_n"], r["n"], 3)
                                 if split == "test" else r["val"],
                                 f"{label}_mean": r["test_mean"], f"{label}_std": r["test_std"]})
        cols.append((label, label))
        data_cols += [(f"{label}_mean", f"{label}_mean"), (f"{label}_std", f"{label}_std")]
    cols += [("n", "n")]
    data_cols += [("n", "n"), ("runs", "runs")]
    return Table(list(rows.values()), cols, data_cols,
                 title=f"{split} {metric} per domain: mean {PM} std over seeds", fixed=base.fixed,
                 varied=base.varied, warnings=_warnings(base, facts))


# baselines without training: one run is all there is (the random order's expectation is 1/K anyway)
UNTRAINED = ("random", "first", "zero-shot")


def _warnings(base: Table, facts) -> list[str]:
    """config_table's notes, without "run more seeds" when only untrained baselines have one run."""
    mode = {f.id: f.flat.get("ranking.mode") for f in facts}
    single = [r for r in base.rows if r["n"] == 1]
    if single and all(mode.get(r["runs"][0]) in UNTRAINED for r in single):
        return [w for w in base.warnings if "single run has no std" not in w]
    return list(base.warnings)


def budget_table(runs: Sequence[Run]) -> Table:
    """Per configuration: segment budgets, truncation rates, padding waste (dynamic, and if every
    pair were padded to the full budget) of the training batches, and test accuracy."""
    base = config_table(runs, "accuracy")
    rows = []
    by_id = {f.id: f for f in read_facts(runs)}
    for r in base.rows:
        facts = [by_id[i] for i in r["runs"]]
        stats = [f.info.get("data", {}).get("budget_train") for f in facts]
        stats = [s for s in stats if s]
        if not stats:
            continue
        cfg = facts[0].flat
        row = {"config": r["config"], "experiment": facts[0].info.get("name", "").split(":")[0],
               "budget": f"{cfg['ranking.context_tokens']}/{cfg['ranking.candidate_tokens']}",
               "loss": cfg["ranking.loss"], "test": r["test"], "n": r["n"], "runs": r["runs"]}
        for k in ("context_truncated", "candidate_truncated", "mean_pair_tokens", "padding_waste",
                  "padding_waste_fixed"):
            row[k] = mean_std([s[k] for s in stats])[0]
        rows.append(row)
    cols = [("experiment", "experiment"), ("budget", "context/candidate"), ("loss", "loss"),
            ("context_truncated", "ctx cut", 3), ("candidate_truncated", "cand cut", 3),
            ("mean_pair_tokens", "tokens/pair", 1),
            ("padding_waste", "pad waste", 3), ("padding_waste_fixed", "pad waste (fixed len)", 3),
            ("test", f"test acc@1 (mean {PM} std)"), ("n", "n")]
    return Table(rows, cols, cols + [("runs", "runs")], title="segment budgets: truncation and padding (train)")


def e2e_table(runs: Sequence[Run]) -> Table:
    """Cross-encoders reranking retrieved candidates: retrieval recall@k x normalized accuracy =
    end-to-end accuracy, per domain and the mean over domains (test split)."""
    rows = []
    for f in read_facts(runs):
        ev = f.last("test")
        m = (ev or {}).get("metrics", {})
        if "retrieval_recall" not in m:
            continue
        doms = sorted(k.split("/", 1)[1] for k in m if k.startswith("retrieval_recall/"))
        for d in doms + ["domain mean", "all"]:
            key = {"all": "{}", "domain mean": "domain_mean/{}"}.get(d, "{}/" + d)
            rows.append({"run": f.id, "k": f.flat.get("ranking.top_k"), "retriever": f.flat.get("ranking.retriever"),
                         "domain": d, "recall": m.get(key.format("retrieval_recall")),
                         "normalized": m.get(key.format("normalized_accuracy")),
                         "accuracy": m.get(key.format("accuracy"))})
    cols = [("run", "run"), ("retriever", "retriever"), ("k", "k"), ("domain", "domain"),
            ("recall", "retrieval recall@k", 3), ("normalized", "rerank acc (gold retrieved)", 3),
            ("accuracy", "end-to-end acc", 3)]
    return Table(rows, cols, cols, title="entity linking: retrieval x reranking (test)")


# the baseline each trained ranking run scores beside itself: a cross-encoder its first stage
# (retriever alone), a bi-encoder its starting (zero-shot) weights
BASELINE = {"cross": [("retriever_accuracy", "first stage alone")],
            "bi": [("zero_shot_accuracy", "zero-shot model"), ("start_accuracy", "starting weights")]}


def stage_table(runs: Sequence[Run], split: str = "test") -> Table:
    """Per configuration (experiment x data) and domain: the run's own baseline (a cross-encoder's
    first stage; a bi-encoder's zero-shot model, or its starting weights when it started from random),
    the final system, their difference (mean ± std over seeds: the difference is paired, same contexts
    in every run) and, for cross-encoders, the reranker alone and the chosen fusion / WiSE-FT weights."""
    groups: dict[tuple, list] = {}
    for f in read_facts(runs):
        mode = f.flat.get("ranking.mode")
        m = ((f.last("test") if split == "test" else f.last("final_validation")) or {}).get("metrics", {})
        found = [b for b in BASELINE.get(mode, []) if b[0] in m]
        if found:
            groups.setdefault((f.info.get("name", "").split(":")[0], f.flat.get("data.source"), found[0]),
                              []).append(m)
    rows = []
    for (exp, source, (base, label)), ms in groups.items():
        doms = sorted({k.split("/", 1)[1] for m in ms for k in m if k.startswith(base + "/")})
        for d in doms + ["domain mean", "all"]:
            key = {"all": "{}", "domain mean": "domain_mean/{}"}.get(d, "{}/" + d)
            b, fin = [m.get(key.format(base)) for m in ms], [m.get(key.format("accuracy")) for m in ms]
            diff = [x - y for x, y in zip(fin, b) if x is not None and y is not None]
            row = {"experiment": exp, "data": source.removeprefix("builtin:"), "baseline": label,
                   "domain": d, "n": len(ms)}
            for col, vals in (("base", b), ("final", fin), ("delta", diff),
                              ("reranker", [m.get(key.format("reranker_accuracy")) for m in ms])):
                mean, std, n = mean_std(vals)
                row[col] = fmt_pm(mean, std, n, len(ms), 3)
                row[f"{col}_mean"], row[f"{col}_std"] = mean, std
            if d == "all":
                row["weights"] = ", ".join(f"{k} {fmt_pm(*mean_std([m.get(k) for m in ms]), digits=2)}"
                                           for k in ("rerank_alpha", "wise") if any(k in m for m in ms))
            rows.append(row)
    cols = [("experiment", "experiment"), ("data", "data"), ("baseline", "baseline"), ("domain", "domain"),
            ("base", "baseline acc"), ("reranker", "reranker alone"), ("final", "final acc"),
            ("delta", "final - baseline"), ("weights", "chosen on validation"), ("n", "n")]
    data_cols = cols + [(f"{c}_{s}", f"{c}_{s}") for c in ("base", "final", "delta", "reranker")
                        for s in ("mean", "std")]
    return Table(rows, cols, data_cols, title=f"{split} accuracy@1: each run against its own baseline "
                 f"(mean {PM} std over seeds)")


def e2e_figure(bi_runs: Sequence[Run], cross_runs: Sequence[Run], path: Path) -> Path:
    """Recall@k of the bi-encoder(s) against k, with each cross-encoder's end-to-end accuracy
    (retrieval recall x reranking accuracy) marked at its k."""
    from encoderlab.analysis.plots import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for f in read_facts(bi_runs):
        m = (f.last("test") or {}).get("metrics", {})
        pts = sorted((int(k.split("@")[1]), v) for k, v in m.items() if re.fullmatch(r"recall@\d+", k))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label=f"{f.flat.get('ranking.mode')} recall@k ({f.id[-4:]})")
    for f in read_facts(cross_runs):
        m = (f.last("test") or {}).get("metrics", {})
        if "retrieval_recall" in m:
            k = f.flat.get("ranking.top_k")
            ax.scatter([k], [m["accuracy"]], marker="*", s=120, zorder=3,
                       label=f"cross end-to-end acc@1, k={k} ({f.id[-4:]})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (retrieved candidates)")
    ax.set_ylabel("test share of contexts")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
