"""Paired comparison of two configurations run on the same seeds (and folds): runs matched by
(train.seed, data.fold), the difference b - a of one metric, its t confidence interval, the paired
t-test and the sign-flip permutation test (numbers from `analysis.stats`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from encoderlab.analysis.configs import REPLICATE_KEYS, group, label, varied_fixed
from encoderlab.analysis.facts import RunFacts, read_facts
from encoderlab.analysis.render import Table
from encoderlab.analysis.stats import fmt_pm, paired_stats
from encoderlab.store.runs import Run


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
    fa, fb = read_facts(runs_a), read_facts(runs_b)
    warnings: list[str] = []
    unmatched: list[dict] = []

    def side(facts: list[RunFacts], name: str) -> dict[tuple, RunFacts]:
        out: dict[tuple, RunFacts] = {}
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

    differs = _differs(fa, fb, warnings)
    if labels is None:
        if differs and len(differs) <= 2:
            labels = (label({k: v[0] for k, v in differs.items()}, list(differs)),
                      label({k: v[1] for k, v in differs.items()}, list(differs)))
        else:
            labels = ("a", "b")
    return Paired(metric=metric, split=split, label_a=labels[0], label_b=labels[1], n=st["n"],
                  mean_a=st["mean_a"], mean_b=st["mean_b"], std_a=st["std_a"], std_b=st["std_b"],
                  diff_mean=st["diff_mean"], diff_std=st["diff_std"], ci_low=st["ci_low"], ci_high=st["ci_high"],
                  confidence=confidence, t=st["t"], df=st["df"], p_t=st["p_t"], p_perm=st["p_perm"],
                  tests=st["tests"], pairs=pairs, unmatched=unmatched, differs=differs, warnings=warnings)


def _differs(fa: list[RunFacts], fb: list[RunFacts], warnings: list[str]) -> dict[str, tuple]:
    """What the comparison is about: {config key: (value a, value b)} for the keys that differ
    between the sides; warns (into `warnings`) when a side mixes configurations."""
    ga, gb = group(fa, REPLICATE_KEYS), group(fb, REPLICATE_KEYS)
    for name, g in (("a", ga), ("b", gb)):
        if len(g) > 1:
            v, _ = varied_fixed([x[0].flat for x in g], REPLICATE_KEYS)
            warnings.append(f"side {name} mixes {len(g)} configurations (differing in {', '.join(v)})")
    if not (ga and gb):
        return {}
    varied, _ = varied_fixed([ga[0][0].flat, gb[0][0].flat], REPLICATE_KEYS)
    return {k: (ga[0][0].flat.get(k), gb[0][0].flat.get(k)) for k in varied}
