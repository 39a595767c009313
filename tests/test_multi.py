"""Statistics for many configurations: Holm's correction and the seeds-needed estimate against
hand-computed values, the Friedman test / critical difference against scipy and the textbook."""

from __future__ import annotations

import math

import numpy as np
import pytest

from encoderlab.analysis import multi as M


def test_holm_matches_hand_computed_values():
    # sorted 0.01, 0.02, 0.03, 0.04 (m = 4): x4 = 0.04, x3 = 0.06, x2 = 0.06, x1 = 0.04 -> running max
    assert M.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # a p-value whose multiple exceeds 1 is capped; None is not counted in m
    assert M.holm([0.5, None, 0.001]) == [pytest.approx(0.5), None, pytest.approx(0.002)]
    assert M.holm([0.6, 0.4]) == [pytest.approx(0.8), pytest.approx(0.8)]
    assert M.holm([]) == []


def test_seeds_needed_matches_hand_computed_values():
    # z_0.975 + z_0.8 = 1.959964 + 0.841621 = 2.801585; n = 2 (2.801585 * 0.01 / 0.01)^2 = 15.70 -> 16
    assert M.seeds_needed(0.01, 0.01) == 16
    # std 0.005, detect 0.01: 2 * (2.801585 / 2)^2 = 3.92 -> 4
    assert M.seeds_needed(0.005, 0.01) == 4
    # tiny spread: at least 2 seeds
    assert M.seeds_needed(0.0001, 0.01) == 2
    assert M.seeds_needed(0.02, 0.01, power=0.9) == math.ceil(2 * ((1.959964 + 1.281552) * 2) ** 2)


def test_friedman_and_critical_difference():
    from scipy import stats
    scores = np.array([[0.90, 0.85, 0.80], [0.88, 0.86, 0.70], [0.92, 0.80, 0.81], [0.91, 0.89, 0.75]])
    res = M.friedman(scores, ["a", "b", "c"])
    assert res["mean_ranks"] == pytest.approx([1.0, 2.25, 2.75])
    assert res["p_value"] == pytest.approx(stats.friedmanchisquare(*scores.T).pvalue)
    # Demsar (2006), table 5: q_0.05 for k = 3 is 2.343; CD = 2.343 * sqrt(3 * 4 / (6 * 4))
    assert res["cd"] == pytest.approx(2.343 * math.sqrt(12 / 24), abs=2e-3)
    png = M.cd_diagram(res)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_ranking_table_holm_and_seeds_needed_on_real_runs(tmp_path, two_class_csv):
    """Three configurations x 3 seeds of real tiny runs: more than two ranked, so Holm applies."""
    from conftest import tiny_config
    from encoderlab.store.runs import RunStore
    from encoderlab.train.fit import fit
    store = RunStore(tmp_path / "runs")
    runs = []
    for lr in (3e-3, 1e-3, 1e-4):
        for seed in (0, 1, 2):
            cfg = tiny_config(two_class_csv, name="r", group="g", train__lr=lr, train__seed=seed, train__epochs=1,
                              data__max_train=64)
            runs.append(fit(cfg, store, progress=False))
    t = M.ranking_table(runs, detect=0.01)
    assert [r["rank"] for r in t.rows] == [1, 2, 3]
    raw = [r["p_t"] for r in t.rows[1:]]
    assert [r["p_holm"] for r in t.rows[1:]] == M.holm(raw)
    assert any("Holm-corrected for the" in w for w in t.warnings)
    assert any("seeds needed to detect a difference of 0.01" in w for w in t.warnings)
    store.close()


def test_friedman_says_when_too_few_datasets_can_never_be_significant():
    # 2 datasets, 3 configurations, the same ranking on both: chi2 = N (k - 1) = 4, the largest it
    # can be, p = exp(-2) = 0.135 (chi-square with 2 df), so no data could reach 0.05
    res = M.friedman(np.array([[0.9, 0.8, 0.7], [0.6, 0.5, 0.4]]), ["a", "b", "c"])
    assert res["statistic"] == pytest.approx(4.0) and res["p_value"] == pytest.approx(math.exp(-2))
    assert res["p_floor"] == pytest.approx(math.exp(-2))
    res.update(metric="accuracy", split="test")
    assert "with 2 datasets even identical rankings on all of them give p = 0.135" in M.friedman_line(res)
    four = M.friedman(np.array([[0.9, 0.8, 0.7]] * 4), ["a", "b", "c"])    # N = 4: p floor exp(-4) = 0.018
    assert four["p_floor"] == pytest.approx(math.exp(-4))
    four.update(metric="accuracy", split="test")
    assert "even identical" not in M.friedman_line(four)


def test_critical_difference_groups_are_maximal():
    # CD 2.16: {1.5, 1.625, 3.125} and {3.125, 3.875, 4.875}; {1.625, 3.125} lies inside the first
    assert M.untold([4.875, 3.875, 3.125, 1.625, 1.5], 2.16) == [(1.5, 3.125), (3.125, 4.875)]
    assert M.untold([1.0, 2.0, 3.0], 2.34) == [(1.0, 3.0)]
    assert M.untold([1.0, 2.5, 4.0], 1.0) == []                 # every pair told apart
