"""A finding (a named problem with its evidence and a fix) and how its numbers are written."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SEVERITIES = ("error", "warning", "info")
# findings as table rows ({"run", **Finding.to_dict()}): the report's and `diagnose --format markdown/csv`
FINDING_COLUMNS = [("run", "run"), ("severity", "severity"), ("title", "finding"), ("evidence", "evidence"),
                   ("fix", "suggested fix")]


@dataclass(frozen=True)
class Finding:
    """One named problem: `code` is stable (for scripts), the rest is for people."""
    code: str
    severity: str          # "error" | "warning" | "info"
    title: str
    evidence: str          # the numbers that show it
    fix: str               # what to change, as config keys

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        return cls(**{k: d[k] for k in ("code", "severity", "title", "evidence", "fix")})


def ordered(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then info; stable within a severity."""
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def unfinished_fix(status: str) -> str:
    """The fix of an 'incomplete' finding for a run with this status."""
    if status == "interrupted":
        return "resume it: encoderlab resume RUN"
    if status == "failed":
        return "read the message; fix the cause and start the run again"
    if status == "pruned":
        return "a search stopped it early (bad validation curve); nothing to fix unless the search's bar is wrong"
    return "wait for the run to finish, then diagnose again"


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# -- numbers in evidence text ------------------------------------------------------------------


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}f}" if abs(x) >= 10 ** -digits or x == 0 else f"{x:.2g}"


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def g(x: float) -> str:
    return f"{x:g}"

