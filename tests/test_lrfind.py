"""The learning-rate range test on a tiny model and real WordNet glosses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import tiny_config
from encoderlab.analysis.tables import final_scores
from encoderlab.errors import ConfigError, EncoderlabError
from encoderlab.train.fit import fit
from encoderlab.train.lrfind import LRFindResult, lr_find


@pytest.fixture(scope="module")
def full(two_class_csv):
    """The default range 1e-7 .. 1 (the tiny model does not diverge before 1)."""
    return lr_find(tiny_config(two_class_csv), progress=False)


@pytest.fixture(scope="module")
def wide(two_class_csv):
    """1e-7 .. 10: far past the point where training falls apart."""
    return lr_find(tiny_config(two_class_csv), end=10.0, progress=False)


def test_records_every_step_with_a_geometric_lr(full):
    r = full
    n = len(r.lrs)
    assert n == len(r.losses) == len(r.smoothed) > 50
    assert r.lrs[0] == pytest.approx(1e-7)
    ratios = np.diff(np.log(r.lrs))
    np.testing.assert_allclose(ratios, math.log(1e7) / 99, rtol=1e-9)   # geometric, 100 steps
    assert all(math.isfinite(x) and x > 0 for x in r.losses[:n - 1])
    # bias-corrected EMA: starts at the first loss, stays within the range of the losses seen
    assert r.smoothed[0] == pytest.approx(r.losses[0])
    for i in range(1, n - 1):
        assert min(r.losses[:i + 1]) - 1e-9 <= r.smoothed[i] <= max(r.losses[:i + 1]) + 1e-9
    # the loss really moves: learning somewhere in the range, blowing up near its end
    assert r.min_loss < r.smoothed[0] - 0.05
    assert r.smoothed[-1] > r.min_loss


def test_stops_early_when_the_loss_diverges(wide):
    r = wide
    assert r.diverged
    assert len(r.lrs) < r.steps
    assert r.stop_lr == r.lrs[-1] < 10.0
    assert r.smoothed[-1] > 4.0 * min(r.smoothed[:-1]) or not math.isfinite(r.smoothed[-1])
    # nothing before the last step triggered the rule
    for i in range(1, len(r.smoothed) - 1):
        assert r.smoothed[i] <= 4.0 * min(r.smoothed[:i])


def test_suggestions_lie_inside_the_range_below_divergence(wide, full):
    for r in (wide, full):
        assert set(r.suggestions) == {"steepest", "min/10"}
        assert r.rule in r.suggestions and r.suggested == r.suggestions[r.rule]
        assert r.suggestions["min/10"] == pytest.approx(r.min_lr / 10)
        for lr in r.suggestions.values():
            assert lr is not None and r.start < lr < r.stop_lr
            assert lr < r.min_lr              # on the way down, before the minimum
        assert r.notes == []
    assert "suggested train.lr" in wide.summary() and "diverged" in wide.summary()


def test_range_spans_the_two_rules_and_reads_as_a_search_line(wide):
    import tomllib
    lo, hi = wide.lr_range
    assert (lo, hi) == (wide.suggestions["min/10"], wide.min_lr / 3) and lo < hi
    assert f"{lo:.2e} .. {hi:.2e}" in wide.summary()
    spec = tomllib.loads(wide.search_line())["train.lr"]["log_uniform"]
    assert spec == [float(f"{lo:.2g}"), float(f"{hi:.2g}")]
    one = LRFindResult.from_dict({**wide.to_dict(), "suggestions": {"min/10": None, "steepest": lo}})
    assert one.lr_range is None and one.search_line() is None and "range" not in one.summary()


def test_training_at_the_suggestion_beats_a_collapsing_lr(full, two_class_csv, tmp_path):
    from encoderlab.store.runs import RunStore
    store = RunStore(tmp_path / "runs")
    acc = {}
    for name, lr in (("end", full.end), ("suggested", full.suggested)):
        try:
            run = fit(tiny_config(two_class_csv, train__epochs=1, train__lr=lr), store, progress=False)
        except EncoderlabError:          # fit stops on a NaN/inf loss: as collapsed as it gets
            assert name == "end"
            acc[name] = 0.0
            continue
        acc[name] = final_scores(run)["final_validation"]["accuracy"]
    base = run.info["data"]["majority_baseline_validation"]
    assert acc["suggested"] > acc["end"], acc
    assert acc["suggested"] > base + 0.05, (acc, base)
    store.close()


def test_save_writes_json_and_png_and_loads_back(wide, tmp_path):
    js, png = wide.save(tmp_path / "out")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    data = json.loads(js.read_text())          # strict JSON: no NaN
    assert data["suggested"] == wide.suggested and len(data["lrs"]) == len(wide.lrs)
    assert data["range"] == list(wide.lr_range)
    back = LRFindResult.load(tmp_path / "out")
    assert back.suggestions == wide.suggestions and back.lrs == wide.lrs
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lrfind.json", "lrfind.png"]


def test_leaves_no_global_state_and_writes_no_run(two_class_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    # setup() seeds torch with train.seed and sets train.threads: both must be undone
    cfg = tiny_config(two_class_csv, train__threads=threads + 1, train__seed=7)
    r = lr_find(cfg, steps=12, end=1e-2, progress=False)
    assert len(r.lrs) == 12
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw", [{"start": 0.0}, {"start": 1.0, "end": 0.1}, {"steps": 3},
                                {"smooth": 1.0}, {"diverge": 1.0}])
def test_rejects_a_bad_range(two_class_csv, kw):
    with pytest.raises(ConfigError, match="lr_find"):
        lr_find(tiny_config(two_class_csv), progress=False, **kw)
