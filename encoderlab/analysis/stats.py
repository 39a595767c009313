"""Statistics for comparing runs: mean +- sample std over seeds, and paired tests of two
configurations run on the same seeds (paired t-test with its confidence interval, sign-flip
permutation test). Pure numbers in, numbers out: nothing here reads the run store."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

PM = "±"


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1, n) of the values present; std None when n < 2."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return None, None, 0
    if len(xs) == 1:
        return xs[0], None, 1
    arr = np.asarray(xs, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)), len(xs)


def fmt_pm(mean: float | None, std: float | None, n: int = 0, of: int = 0, digits: int = 4) -> str | None:
    """'0.8123 ± 0.0101'; just the mean when there is no std; '(n=2 of 3)' when values are missing."""
    if mean is None:
        return None
    text = f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} {PM} {std:.{digits}f}"
    if of and n < of:
        text += f" (n={n} of {of})"
    return text


def sign_flip_test(diffs: Sequence[float], max_exact: int = 16, n_random: int = 20000,
                   seed: int = 0) -> dict:
    """Two-sided sign-flip permutation test of mean(diffs) = 0 for paired differences.

    Under the null each difference is as likely positive as negative; the p-value is the share of
    sign patterns whose |mean| is at least the observed one. All 2^n patterns are enumerated when
    n <= max_exact (exact p, the observed pattern included, so p >= 2/2^n); otherwise `n_random`
    random patterns from numpy's default_rng(seed), p = (hits + 1) / (n_random + 1)."""
    d = np.asarray([float(x) for x in diffs], dtype=float)
    n = len(d)
    if n == 0:
        return {"test": "sign-flip permutation test", "p_value": None, "method": None, "patterns": 0,
                "statistic": None}
    obs = abs(d.sum())
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))
    if n <= max_exact:
        codes = np.arange(2 ** n, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(n)) & 1)
        hits = int((np.abs(signs @ d) >= obs - tol).sum())
        p, method, patterns = hits / 2 ** n, "exact", 2 ** n
        name = f"sign-flip permutation test (exact, all 2^{n} = {2 ** n} sign patterns, two-sided)"
    else:
        rng = np.random.default_rng(seed)
        hits = 0
        for start in range(0, n_random, 4096):
            m = min(4096, n_random - start)
            signs = rng.choice(np.array([-1.0, 1.0]), size=(m, n))
            hits += int((np.abs(signs @ d) >= obs - tol).sum())
        p, method, patterns = (hits + 1) / (n_random + 1), "monte-carlo", n_random
        name = f"sign-flip permutation test ({n_random} random sign patterns, seed {seed}, two-sided)"
    return {"test": name, "statistic": float(d.mean()), "p_value": float(min(1.0, p)), "method": method,
            "patterns": patterns}


def paired_stats(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                 max_exact: int = 16, n_random: int = 20000, seed: int = 0) -> dict:
    """Paired comparison of equal-length samples: b - a.

    Returns n, mean_a, mean_b, std_a, std_b, diff_mean, diff_std, ci_low, ci_high (t interval),
    t, df, p_t (scipy.stats.ttest_rel, two-sided), p_perm (sign-flip test), tests (name + numbers of
    each test) and warnings. Degenerate cases: n=1 gives no std, CI or t-test; differences all
    equal give a zero-width CI and t = 0 (p = 1) when they are zero, +-inf (p = 0) otherwise."""
    from scipy import stats
    a = [float(x) for x in a]
    b = [float(x) for x in b]
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    n = len(a)
    d = np.asarray(b) - np.asarray(a)
    ma, sa, _ = mean_std(a)
    mb, sb, _ = mean_std(b)
    dm, ds, _ = mean_std(d.tolist())
    out = {"n": n, "mean_a": ma, "mean_b": mb, "std_a": sa, "std_b": sb, "diff_mean": dm, "diff_std": ds,
           "confidence": confidence, "ci_low": None, "ci_high": None, "t": None, "df": None, "p_t": None,
           "p_perm": None, "warnings": []}
    t_name = "paired t-test (scipy.stats.ttest_rel, two-sided)"
    if n == 0:
        out["warnings"].append("no pairs: nothing to compare")
    elif n == 1:
        out["warnings"].append("only 1 pair: no spread, no confidence interval, no t-test")
    else:
        out["df"] = n - 1
        if ds <= 1e-12 * max(1.0, abs(dm)):          # equal up to float rounding
            out["ci_low"] = out["ci_high"] = dm
            if abs(dm) <= 1e-12:
                out["t"], out["p_t"] = 0.0, 1.0
                out["warnings"].append("all differences are zero: the two sides scored the same on every pair")
            else:
                out["t"], out["p_t"] = math.copysign(math.inf, dm), 0.0
                out["warnings"].append("all differences are equal: zero spread, the t-test is degenerate")
        else:
            res = stats.ttest_rel(b, a)
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * ds / math.sqrt(n)
            out.update(t=float(res.statistic), p_t=float(res.pvalue), ci_low=dm - half, ci_high=dm + half)
    perm = sign_flip_test(d.tolist(), max_exact, n_random, seed)
    out["p_perm"] = perm["p_value"]
    if 0 < n < 3:
        out["warnings"].append(f"only {n} pair{'s' if n > 1 else ''}: too few for a trustworthy test "
                               "(use 3 or more seeds)")
    if 0 < n <= max_exact and 2 / 2 ** n > 0.05:
        out["warnings"].append(f"with {n} pairs the smallest possible permutation p-value is "
                               f"{2 / 2 ** n:.3g}: it can never reach 0.05")
    out["tests"] = [
        {"test": t_name, "statistic": out["t"], "df": out["df"], "p_value": out["p_t"]},
        {"test": perm["test"], "statistic": perm["statistic"], "df": None, "p_value": perm["p_value"],
         "method": perm["method"], "patterns": perm["patterns"]},
    ]
    return out
