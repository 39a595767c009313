"""Name what went wrong with a run (or a group of runs), read only from the run store.

    findings = diagnose(run)            # list[Finding], errors first
    findings = diagnose_group(runs)     # cross-run: seed variance, rankings inside the noise
    write(run) / load_or_compute(run)   # cached as <run>/diagnostics.json

Everything comes from what fit() stored (see `run_evidence`); nothing is re-trained or
re-evaluated. Where the parts live:

    findings.py      Finding, severities, how evidence numbers are written
    thresholds.py    the numbers the rules judge by
    run_evidence.py  RunContext: what the per-run rules read from a run folder; label priors
    rules_run.py     the per-run rules (collapse, no learning, divergence, overfitting, padding, [UNK] ...)
    rules_task.py    the multilabel / regression rules (empty-set collapse, always-on labels, constant
                     predictions, targets outside the train range ...)
    rules_group.py   the cross-run rules (seed variance, rankings inside the noise, single seeds)
"""

from __future__ import annotations

import json

from encoderlab.analysis.configs import config_key
from encoderlab.analysis.findings import SEVERITIES, Finding, ordered, unfinished_fix
from encoderlab.analysis.rules_group import diagnose_group
from encoderlab.analysis.rules_run import run_findings
from encoderlab.analysis.rules_task import task_findings
from encoderlab.analysis.run_evidence import prior_entropy, prior_loss, read_run
from encoderlab.analysis.thresholds import *  # noqa: F401,F403  (thresholds stay readable as diagnose.X)
from encoderlab import kinds
from encoderlab.store import atomic
from encoderlab.store.runs import Run, now

__all__ = ["DIAGNOSTICS_FILE", "SEVERITIES", "VERSION", "Finding", "config_key", "diagnose", "diagnose_group",
           "load_or_compute", "prior_entropy", "prior_loss", "write"]

DIAGNOSTICS_FILE = "diagnostics.json"
# bump when a rule or threshold changes, so cached diagnostics.json files are recomputed
VERSION = 4


def _pretrain_findings(run: Run) -> list[Finding]:
    """A pretraining run is judged while it trains (duplicate lines, unigram plateau, one token
    everywhere: encoderlab.train.pretrain); its warnings are stored as `warning` events."""
    found = [Finding(d["code"], "warning", d["title"], d["evidence"], d["fix"])
             for d in (ev.get("detail") or {} for ev in run.events() if ev.get("split") == "warning")]
    status = run.status
    if status != "completed":
        msg = run.info.get("message") or ""
        found.append(Finding("incomplete", "info", f"pretraining run is {status}",
                             "model warnings are checked when it finishes" + (f"; message: {msg}" if msg else ""),
                             unfinished_fix(status)))
    return found


def diagnose(run: Run) -> list[Finding]:
    """Findings for one run, errors first; a healthy run has no error or warning."""
    if kinds.kind_of(run) == "pretraining":
        return ordered(_pretrain_findings(run))
    ctx = read_run(run)
    return ordered(run_findings(ctx, run.status) + task_findings(ctx))


def _fingerprint(run: Run) -> dict:
    path = run.dir / "metrics.jsonl"
    info = run.info
    return {"version": VERSION, "metrics_bytes": path.stat().st_size if path.exists() else 0,
            "status": info.get("status"), "finished": info.get("finished")}


def write(run: Run, findings: list[Finding] | None = None) -> list[Finding]:
    """Compute (unless given) and store the findings as <run>/diagnostics.json, atomically."""
    if findings is None:
        findings = diagnose(run)
    atomic.write_json(run.dir / DIAGNOSTICS_FILE,
                      {"run": run.id, "computed": now(), "source": _fingerprint(run),
                       "findings": [f.to_dict() for f in findings]})
    return findings


def load_or_compute(run: Run) -> list[Finding]:
    """Stored findings when they match the run's current metrics and status, else recomputed
    (and stored when the folder is writable)."""
    path = run.dir / DIAGNOSTICS_FILE
    try:
        stored = json.loads(path.read_text())
        if stored.get("source") == _fingerprint(run):
            return [Finding.from_dict(d) for d in stored["findings"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    findings = diagnose(run)
    try:
        write(run, findings)
    except OSError:
        pass
    return findings

