"""Diagnose rules across runs: seed variance per configuration, config rankings smaller than
that noise, configs compared on a single seed each. Runs are grouped into configurations by
`configs.config_key` (the same definition compare uses)."""

from __future__ import annotations

import json
import statistics

from encoderlab.analysis.configs import config_key
from encoderlab.analysis.findings import Finding, finite, fmt, ordered
from encoderlab.analysis.thresholds import SEED_NOISE_RATIO, SEED_STD_MAX
from encoderlab.store.runs import Run


def _test_accuracy(run: Run) -> float | None:
    acc = None
    for ev in run.events():
        if ev.get("split") == "test":
            acc = (ev.get("metrics") or {}).get("accuracy")
    return acc


def diagnose_group(runs: list[Run]) -> list[Finding]:
    """Cross-run findings: seed variance per config, config rankings smaller than that noise,
    configs compared on a single seed each."""
    groups, skipped = _by_config(runs)
    found: list[Finding] = []
    if skipped:
        found.append(Finding("group_skipped", "info", f"{len(skipped)} run(s) without a test score ignored",
                             "not completed, no test accuracy or no readable config: " + ", ".join(skipped[:5])
                             + (" ..." if len(skipped) > 5 else ""),
                             "finish or resume them (encoderlab resume RUN) to include them"))
    if not groups:
        return ordered(found)
    label = _labels(groups)
    stats = {}
    for k, members in groups.items():
        accs = [a for _, a in members]
        stats[k] = (statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else None, accs, members)
    found += _seed_variance(stats, label)
    found += _within_noise(stats, label)
    if len(stats) >= 2 and all(s[1] is None for s in stats.values()):
        found.append(Finding(
            "single_seed", "info", f"{len(stats)} configs compared on one seed each",
            "differences between configs: " + ", ".join(f"{label[k]}: {fmt(s[0])}" for k, s in stats.items()),
            "seed noise cannot be told apart from real differences: add sweep seeds = [0, 1, 2]"))
    return ordered(found)


def _by_config(runs: list[Run]) -> tuple[dict[str, list[tuple[Run, float]]], list[str]]:
    """Completed runs with a test accuracy, keyed by configuration; the ids of the others."""
    groups: dict[str, list[tuple[Run, float]]] = {}
    skipped = []
    for r in runs:
        acc = _test_accuracy(r)
        try:
            key = config_key(r)
        except Exception:  # unreadable config.toml: cannot tell which config it repeats
            key = None
        if r.status != "completed" or acc is None or not finite(acc) or key is None:
            skipped.append(r.id)
            continue
        groups.setdefault(key, []).append((r, acc))
    return groups, skipped


def _labels(groups: dict[str, list]) -> dict[str, str]:
    """Each config named by the keys that differ between configs ('train.lr=0.001')."""
    flats = {k: json.loads(k) for k in groups}
    keys = sorted({key for f in flats.values() for key in f})
    varying = [key for key in keys
               if len({json.dumps(f.get(key), sort_keys=True) for f in flats.values()}) > 1]
    return {k: ", ".join(f"{key}={flats[k].get(key)}" for key in varying) or "the config" for k in groups}


def _seed_variance(stats: dict[str, tuple], label: dict[str, str]) -> list[Finding]:
    """A config whose seed std is large in points, or large next to the differences between configs."""
    means = [s[0] for s in stats.values()]
    diffs = [abs(a - b) for i, a in enumerate(means) for b in means[i + 1:]]
    mean_diff = statistics.fmean(diffs) if diffs else None
    test_n = None
    for _, (_, _, _, members) in stats.items():
        test_n = ((members[0][0].info.get("data") or {}).get("sizes") or {}).get("test")
        break
    found = []
    for k, (mean, std, accs, members) in stats.items():
        if std is None:
            continue
        noisy_abs = std > SEED_STD_MAX
        noisy_rel = mean_diff is not None and mean_diff > 0 and std >= SEED_NOISE_RATIO * mean_diff
        if not (noisy_abs or noisy_rel):
            continue
        seeds = [f"{_replicate(run)}: {fmt(a)}" for run, a in members]
        why = []
        if noisy_abs:
            why.append(f"above {100 * SEED_STD_MAX:.0f} points")
        if mean_diff is not None:
            why.append(f"mean difference between the {len(stats)} configs {100 * mean_diff:.1f} points")
        gran = f"; one test example = {100 / test_n:.2f} points (test size {test_n})" if test_n else ""
        found.append(Finding(
            "seed_variance", "warning", f"large seed variance for {label[k]}",
            f"test accuracy {'; '.join(seeds)} -> mean {fmt(mean)}, std {100 * std:.1f} points "
            f"({'; '.join(why)}){gran}",
            "report mean +- std over >= 3 seeds (sweep seeds = [0, 1, 2, 3, 4]) and compare configs by "
            "their means; stabilise training (warmup train.warmup_ratio=0.1, lower train.lr, more "
            "epochs); use a larger test set (data.max_eval=0)"))
    return found


def _replicate(run: Run) -> str:
    """'seed 1' / 'seed 1/fold 2', or the run id when its config cannot be read."""
    try:
        c = run.config()
        return f"seed {c.train.seed}" + (f"/fold {c.data.fold}" if c.data.folds else "")
    except Exception:
        return run.id


def _within_noise(stats: dict[str, tuple], label: dict[str, str]) -> list[Finding]:
    """The best repeated config beats the runner-up by less than their seed std."""
    repeated = {k: s for k, s in stats.items() if s[1] is not None}
    if len(repeated) < 2:
        return []
    ranked = sorted(repeated.items(), key=lambda kv: -kv[1][0])
    (k1, s1), (k2, s2) = ranked[0], ranked[1]
    gap = s1[0] - s2[0]
    noise = max(s1[1], s2[1])
    if gap >= noise:
        return []
    return [Finding(
        "within_noise", "warning", "the best config does not beat the runner-up beyond seed noise",
        f"{label[k1]}: {fmt(s1[0])} +- {fmt(s1[1])} ({len(s1[2])} runs) vs {label[k2]}: "
        f"{fmt(s2[0])} +- {fmt(s2[1])} ({len(s2[2])} runs): difference {100 * gap:.1f} points < "
        f"seed std {100 * noise:.1f} points",
        "do not pick a winner yet: add seeds (sweep seeds) until the difference exceeds the "
        "std, or call them equivalent")]
