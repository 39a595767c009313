"""What one stored run says, read once per analysis call: its info, effective status, flat config
and metric events, with the few questions compare and paired ask of them (best validation value,
epoch of the kept checkpoint, last event of a split)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from encoderlab.analysis.configs import flat_config
from encoderlab.metrics import LOWER_IS_BETTER
from encoderlab.store.runs import Run


@dataclass
class RunFacts:
    run: Run
    info: dict
    status: str
    flat: dict
    events: list[dict]

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def name(self) -> str:
        return self.info.get("name") or self.run.id

    @property
    def seed(self):
        return self.flat.get("train.seed")

    @property
    def fold(self):
        return self.flat.get("data.fold") if self.flat.get("data.folds") else None

    def validations(self) -> list[dict]:
        """Validation events by step (a resumed run's repeated step keeps the newest)."""
        by_step: dict = {}
        for ev in self.events:
            if ev.get("split") == "validation":
                by_step[ev.get("step")] = ev
        return [by_step[s] for s in sorted(by_step, key=lambda s: (s is None, s))]

    def last(self, split: str) -> dict | None:
        hit = None
        for ev in self.events:
            if ev.get("split") == split:
                hit = ev
        return hit

    def best_event(self, metric: str) -> dict | None:
        """The first validation event with the best value of `metric` (as fit picks the best)."""
        best = None
        for ev in self.validations():
            v = ev.get("metrics", {}).get(metric)
            if v is None:
                continue
            if best is None or (v < best[0] if metric in LOWER_IS_BETTER else v > best[0]):
                best = (v, ev)
        return best[1] if best else None

    def best_val(self, metric: str) -> float | None:
        if self.info.get("best_metric") == metric and self.info.get("best_value") is not None:
            return float(self.info["best_value"])
        ev = self.best_event(metric)
        return None if ev is None else float(ev["metrics"][metric])

    def best_epoch(self, metric: str) -> float | None:
        test = self.last("test")
        if test is not None and self.info.get("best_metric") == metric and test.get("epoch") is not None:
            return float(test["epoch"])        # the checkpoint fit picked and tested
        ev = self.best_event(metric)
        return None if ev is None or ev.get("epoch") is None else float(ev["epoch"])

    def value(self, split: str, metric: str) -> float | None:
        """'validation' = best validation value; any other split = its last event."""
        if split == "validation":
            return self.best_val(metric)
        ev = self.last(split)
        v = None if ev is None else ev.get("metrics", {}).get(metric)
        return None if v is None else float(v)


def read_facts(runs: Iterable[Run | RunFacts]) -> list[RunFacts]:
    """RunFacts of each run (facts already read pass through)."""
    out = []
    for r in runs:
        if isinstance(r, RunFacts):
            out.append(r)
            continue
        info = r.info
        out.append(RunFacts(r, info, r.store.effective_status(info), flat_config(r), r.events()))
    return out
