"""What the per-run diagnose rules look at, read once from a run folder (`RunContext`), and the
label-prior arithmetic they compare against.

Everything comes from what fit() stored: `run.json` (data summary: class balance, majority
baselines, padding waste, truncation), `config.toml`, and the `metrics.jsonl` events (one
`train` event per epoch with the epoch-mean loss/accuracy, one `validation` event per evaluation
with `detail.per_class` and `detail.predicted_share`, and `final_validation` / `test` events for
the kept checkpoint)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from encoderlab import config as C
from encoderlab.analysis.findings import finite, fmt
from encoderlab.store.runs import Run


@dataclass
class RunContext:
    """What the rules look at, pulled once from the run folder."""
    info: dict
    data: dict
    cfg: C.ExperimentConfig | None
    train: list[dict]        # per train event: step, epoch, loss, accuracy, lr
    val: list[dict]          # per validation event: step, epoch, loss, accuracy, macro_f1, detail
    final: dict[str, dict]   # "final_validation" / "test" -> same fields

    @property
    def k(self) -> int:
        return int(self.data.get("num_labels") or len(self.data.get("train_class_balance") or {}) or 2)

    @property
    def ln_k(self) -> float:
        return math.log(max(self.k, 2))

    @property
    def lr(self) -> float | None:
        return self.cfg.train.lr if self.cfg else None

    def majority(self, split: str) -> float | None:
        key = "majority_baseline_test" if split == "test" else "majority_baseline_validation"
        return self.data.get(key)

    def train_loss_at(self, step: int) -> float | None:
        """Train loss of the latest train event at or before `step`."""
        before = [t for t in self.train if t["step"] <= step and finite(t["loss"])]
        return before[-1]["loss"] if before else None


def read_run(run: Run) -> RunContext:
    """The run's info, config (None when unreadable) and train / validation / final events."""
    info = run.info
    try:
        cfg = run.config()
    except Exception:  # a damaged config.toml should not stop the other rules
        cfg = None
    by_key: dict[tuple[str, int], dict] = {}
    for ev in run.events():  # a resumed run repeats some steps: keep the newest
        split = ev.get("split")
        if split not in ("train", "validation", "final_validation", "test"):
            continue
        m = ev.get("metrics", {})
        if (ev.get("detail") or {}).get("nonfinite"):   # fit stopped on a NaN/inf loss
            m = {**m, "loss": float(ev["detail"].get("loss", "nan"))}
        by_key[(split, ev.get("step", 0))] = {
            "split": split, "step": ev.get("step", 0), "epoch": ev.get("epoch", 0.0),
            # no "loss" key = not measured (ranking evaluations report accuracy, MRR, recall@k only)
            "loss": _num(m["loss"]) if "loss" in m else None, "accuracy": m.get("accuracy"),
            "macro_f1": m.get("macro_f1"), "metrics_micro_f1": m.get("micro_f1"),
            "lr": m.get("lr"), "detail": ev.get("detail", {})}
    rows = sorted(by_key.values(), key=lambda r: r["step"])
    final = {}
    for r in rows:
        if r["split"] in ("final_validation", "test"):
            final[r["split"]] = r
    return RunContext(info, info.get("data") or {}, cfg, [r for r in rows if r["split"] == "train"],
                      [r for r in rows if r["split"] == "validation"], final)


def _num(x):
    """A logged loss as a float; a null one (NaN written by an older version) counts as NaN."""
    return float("nan") if x is None else float(x)


def at(r: dict) -> str:
    e = r["epoch"]
    return f"epoch {e:g} (step {r['step']})"


def series(rows: list[dict], key: str = "loss") -> str:
    return ", ".join(fmt(r[key]) for r in rows)


# -- label priors ------------------------------------------------------------------------------


def label_dist(detail: dict) -> dict[str, float] | None:
    pc = detail.get("per_class") or {}
    total = sum(v.get("support", 0) for v in pc.values())
    if not total:
        return None
    return {n: v.get("support", 0) / total for n, v in pc.items()}


def prior_entropy(balance: dict[str, float]) -> float:
    """Entropy (nats) of the training label distribution: the loss floor of a model that knows
    nothing about the text, on data distributed like the training set."""
    return -sum(p * math.log(p) for p in balance.values() if p > 0)


def prior_loss(balance: dict[str, float], eval_dist: dict[str, float], weighted: bool = False) -> float:
    """Cross-entropy on a split with label distribution `eval_dist` of a model that always outputs
    the training prior `balance` (class-weighted like fit() when `weighted`)."""
    num = den = 0.0
    k = len(balance)
    for n, q in eval_dist.items():
        p = max(balance.get(n, 0.0), 1e-12)
        w = 1.0 / (k * p) if weighted else 1.0
        num += q * w * -math.log(p)
        den += q * w
    return num / den if den else float("nan")

