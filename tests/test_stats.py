"""Statistics with hand-made numbers: mean +- std, the paired t-test against scipy and the
sign-flip permutation test against brute-force enumeration of all sign patterns."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from encoderlab.analysis import stats as ST


def brute_force_p(d) -> float:
    obs = abs(sum(d))
    hits = sum(abs(sum(s * x for s, x in zip(signs, d))) >= obs - 1e-12
               for signs in itertools.product((1, -1), repeat=len(d)))
    return hits / 2 ** len(d)


def test_paired_stats_regular_case():
    a = [0.70, 0.72, 0.69, 0.75, 0.71]
    b = [0.74, 0.73, 0.75, 0.78, 0.70]
    r = ST.paired_stats(a, b)
    ref = stats.ttest_rel(b, a)
    assert r["t"] == pytest.approx(ref.statistic) and r["p_t"] == pytest.approx(ref.pvalue) and r["df"] == 4
    ci = ref.confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert r["p_perm"] == pytest.approx(brute_force_p(np.subtract(b, a)))
    assert r["p_perm"] == pytest.approx(6 / 32)                     # ties count as extreme
    assert not any("pairs" in w and "too few" in w for w in r["warnings"])


def test_paired_stats_single_pair():
    r = ST.paired_stats([0.5], [0.7])
    assert r["n"] == 1 and r["diff_mean"] == pytest.approx(0.2)
    assert r["std_a"] is None and r["diff_std"] is None
    assert r["ci_low"] is None and r["t"] is None and r["p_t"] is None
    assert r["p_perm"] == 1.0                                       # +d and -d: both as extreme
    assert any("only 1 pair" in w for w in r["warnings"])


def test_paired_stats_all_differences_zero():
    r = ST.paired_stats([0.6, 0.7, 0.8, 0.9], [0.6, 0.7, 0.8, 0.9])
    assert r["diff_mean"] == 0.0 and r["diff_std"] == 0.0
    assert r["t"] == 0.0 and r["p_t"] == 1.0 and r["p_perm"] == 1.0
    assert (r["ci_low"], r["ci_high"]) == (0.0, 0.0)
    assert any("all differences are zero" in w for w in r["warnings"])


def test_paired_stats_constant_nonzero_difference():
    r = ST.paired_stats([0.5, 0.6, 0.7], [0.6, 0.7, 0.8])
    assert r["t"] == np.inf and r["p_t"] == 0.0
    assert r["ci_low"] == pytest.approx(0.1) and r["ci_high"] == pytest.approx(0.1)
    assert r["p_perm"] == pytest.approx(2 / 8)
    assert any("degenerate" in w for w in r["warnings"])


def test_sign_flip_exact_and_random():
    rng = np.random.default_rng(3)
    d = rng.normal(0.02, 0.03, 10)
    exact = ST.sign_flip_test(d)
    assert exact["method"] == "exact" and exact["patterns"] == 1024
    assert exact["p_value"] == pytest.approx(brute_force_p(d))
    big = rng.normal(0.01, 0.03, 18)
    mc = ST.sign_flip_test(big)
    assert mc["method"] == "monte-carlo" and "20000 random sign patterns, seed 0" in mc["test"]
    assert mc["p_value"] == ST.sign_flip_test(big)["p_value"]       # fixed seed: reproducible
    exact18 = ST.sign_flip_test(big, max_exact=18)["p_value"]
    assert abs(mc["p_value"] - exact18) < 0.02
    assert ST.sign_flip_test([])["p_value"] is None


def test_mean_std_and_format():
    assert ST.mean_std([]) == (None, None, 0)
    assert ST.mean_std([0.5, None]) == (0.5, None, 1)
    m, s, n = ST.mean_std([0.1, 0.2, 0.4])
    assert (m, s, n) == (pytest.approx(np.mean([.1, .2, .4])), pytest.approx(np.std([.1, .2, .4], ddof=1)), 3)
    assert ST.fmt_pm(0.81234, 0.0101) == "0.8123 ± 0.0101"
    assert ST.fmt_pm(0.5, None) == "0.5000" and ST.fmt_pm(None, None) is None
