"""Name what went wrong with a run (or a group of runs), read only from the run store.

    findings = diagnose(run)            # list[Finding], errors first
    findings = diagnose_group(runs)     # cross-run: seed variance, rankings inside the noise
    write(run) / load_or_compute(run)   # cached as <run>/diagnostics.json

Everything comes from what fit() stored: `run.json` (data summary: class balance, majority
baselines, padding waste, truncation), `config.toml`, and the `metrics.jsonl` events (one
`train` event per epoch with the epoch-mean loss/accuracy, one `validation` event per evaluation
with `detail.per_class` and `detail.predicted_share`, and `final_validation` / `test` events for
the kept checkpoint). Nothing is re-trained or re-evaluated.

Train loss/accuracy are running means over an epoch (with dropout on), so "flat" and "rising"
are judged epoch to epoch, not step to step.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass

from encoderlab import config as C
from encoderlab import kinds
from encoderlab.store import atomic
from encoderlab.store.runs import Run, now

# -- thresholds --------------------------------------------------------------------------------

# collapse: one class gets >= 95% of predictions (leaves room for a handful of stray predictions)
COLLAPSE_SHARE = 0.95
# collapse: ...and the other classes are (almost) never found: their mean recall is at most 10%
COLLAPSE_OTHER_RECALL = 0.10
# "accuracy = majority baseline": within 1 point (one or two examples on a small eval split)
BASELINE_ACC_MARGIN = 0.01
# "loss = loss of predicting the training prior": within 10% of that cross-entropy
PRIOR_LOSS_TOL = 0.10
# no learning: the train loss moves by less than 5% of its first value over the whole run
NO_LEARNING_REL_CHANGE = 0.05
# no learning: ...and validation accuracy never gets more than 2 points above the majority
NO_LEARNING_ACC_MARGIN = 0.02
# a loss "still falls" when it dropped by at least 5% (relative) in the last epoch
STILL_FALLING_REL = 0.05
# collapse: fewer optimizer steps than this cannot show learning (warmup alone may take them)
MIN_STEPS_TO_JUDGE = 20
# divergence: an epoch-mean train loss above 2x ln(K) (uniform guessing) means the model blew up
DIVERGE_LOSS_FACTOR = 2.0
# divergence: a loss 1.5x its previous value is a spike, not noise ...
DIVERGE_RISE = 1.5
# ... when it also rose by at least 10% of ln(K) (tiny losses near 0 may double harmlessly)
DIVERGE_MIN_ABS_RISE = 0.10
# divergence: a validation spike counts when the loss doubles and ends above ln(K)
DIVERGE_VAL_SPIKE = 2.0
# overfitting: validation loss above its minimum for >= 2 evaluations (one may be noise)
OVERFIT_MIN_EVALS_AFTER = 2
# overfitting: ...and the last one at least 10% above the minimum
OVERFIT_MIN_RISE = 0.10
# over-confidence: validation loss >= 20% above its minimum while accuracy gained >= 2 points
OVERCONFIDENT_LOSS_RISE = 0.20
OVERCONFIDENT_ACC_GAIN = 0.02
# metric/loss mismatch: accuracy 5 points below majority with a loss 20% below the prior's
MISMATCH_ACC_MARGIN = 0.05
MISMATCH_LOSS_RATIO = 0.80
# underfitting: train accuracy at most 5 points above validation (no generalisation gap yet) ...
UNDERFIT_GAP = 0.05
# ... and below 95% (a model that fits its training data is not underfitting)
UNDERFIT_MAX_TRAIN_ACC = 0.95
# ... and still rising by >= 1 point in the last epoch (with the loss still falling, STILL_FALLING_REL)
UNDERFIT_RISING = 0.01
# padding: more than 30% of the token slots of train batches are padding (compute thrown away)
PADDING_WASTE_MAX = 0.30
# truncation: more than 10% of the training examples hit encode.max_length
TRUNCATED_SHARE_MAX = 0.10
# group: a seed std above 2 accuracy points is larger than most differences worth reporting
SEED_STD_MAX = 0.02
# group: seed std >= 1x the mean difference between configs means the ranking is seed noise
SEED_NOISE_RATIO = 1.0
# usual peak learning rates per model.init; outside this range a fix names a better value
LR_RANGE = {"pretrained": (1e-5, 3e-4), "random": (1e-4, 1e-2)}
# config keys that do not change what is trained (ignored when grouping runs into configs)
IGNORED_KEYS = ("name", "group", "train.seed", "data.fold", "train.threads", "train.device")

SEVERITIES = ("error", "warning", "info")
DIAGNOSTICS_FILE = "diagnostics.json"
# bump when a rule or threshold changes, so cached diagnostics.json files are recomputed
VERSION = 2


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


# -- reading a run -----------------------------------------------------------------------------


@dataclass
class _Ctx:
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
        before = [t for t in self.train if t["step"] <= step and _finite(t["loss"])]
        return before[-1]["loss"] if before else None


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _read(run: Run) -> _Ctx:
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
            "macro_f1": m.get("macro_f1"),
            "lr": m.get("lr"), "detail": ev.get("detail", {})}
    rows = sorted(by_key.values(), key=lambda r: r["step"])
    final = {}
    for r in rows:
        if r["split"] in ("final_validation", "test"):
            final[r["split"]] = r
    return _Ctx(info, info.get("data") or {}, cfg, [r for r in rows if r["split"] == "train"],
                [r for r in rows if r["split"] == "validation"], final)


def _num(x):
    """A logged loss as a float; a null one (NaN written by an older version) counts as NaN."""
    return float("nan") if x is None else float(x)


# -- small helpers for text --------------------------------------------------------------------


def _f(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}f}" if abs(x) >= 10 ** -digits or x == 0 else f"{x:.2g}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _g(x: float) -> str:
    return f"{x:g}"


def _ep(r: dict) -> str:
    e = r["epoch"]
    return f"epoch {e:g} (step {r['step']})"


def _series(rows: list[dict], key: str = "loss") -> str:
    return ", ".join(_f(r[key]) for r in rows)


def _lr_advice(ctx: _Ctx, direction: str) -> str:
    """'train.lr=X -> Y' moving the LR by 10x in `direction` ('down'|'up'), noting the usual range."""
    if ctx.lr is None:
        return "lower train.lr 10x" if direction == "down" else "raise train.lr 10x"
    init = ctx.cfg.model.init
    lo, hi = LR_RANGE.get(init, LR_RANGE["pretrained"])
    lr = ctx.lr
    if direction == "down":
        note = f"; usual for model.init={init}: {_g(lo)}..{_g(hi)}" if lr > hi else ""
        if lr / 10 > 10 * hi:  # far off: 10x lower would still diverge, go to the top of the range
            return f"lower train.lr to {_g(hi)} (now {_g(lr)}{note})"
        return f"lower train.lr 10x: train.lr={_g(float(f'{lr / 10:.2g}'))} (now {_g(lr)}{note})"
    new = lr * 10 if lr >= lo / 10 else math.sqrt(lo * hi)
    note = f", far below the usual {_g(lo)}..{_g(hi)} for model.init={init}" if lr < lo else ""
    return f"raise train.lr: train.lr={_g(float(f'{new:.1g}'))} (now {_g(lr)}{note})"


# -- per-class helpers -------------------------------------------------------------------------


def _label_dist(detail: dict) -> dict[str, float] | None:
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


def _prior_ref(ctx: _Ctx, r: dict) -> float | None:
    bal = ctx.data.get("train_class_balance")
    dist = _label_dist(r.get("detail") or {})
    if not bal or not dist:
        return None
    weighted = bool(ctx.cfg and ctx.cfg.train.class_weights == "balanced")
    return prior_loss(bal, dist, weighted)


def _collapsed(r: dict) -> tuple[str, float, float] | None:
    """(class, predicted share, mean recall of the other classes) when one class takes nearly
    all predictions and the others are almost never found."""
    share = (r.get("detail") or {}).get("predicted_share") or {}
    pc = (r.get("detail") or {}).get("per_class") or {}
    if not share:
        return None
    top = max(share, key=share.get)
    others = [v["recall"] for n, v in pc.items() if n != top and v.get("support", 0) > 0]
    other_recall = sum(others) / len(others) if others else 0.0
    if share[top] >= COLLAPSE_SHARE and other_recall <= COLLAPSE_OTHER_RECALL:
        return top, share[top], other_recall
    return None


def _final_or_last(ctx: _Ctx) -> list[tuple[str, dict]]:
    """The evaluations the user gets: final validation + test, or the last validation so far."""
    out = [(s, ctx.final[s]) for s in ("test", "final_validation") if s in ctx.final]
    if not out and ctx.val:
        out = [("validation", ctx.val[-1])]
    return out


# -- the rules ---------------------------------------------------------------------------------


def _no_learning(ctx: _Ctx) -> Finding | None:
    series, what, unit = [t for t in ctx.train if _finite(t["loss"])], "train loss", "epochs"
    if len(series) < 2:
        series, what, unit = [v for v in ctx.val if _finite(v["loss"])], "validation loss", "evaluations"
    if len(series) < 2 or series[0]["loss"] <= 0:
        return None
    losses = [r["loss"] for r in series]
    rel = (max(losses) - min(losses)) / losses[0]
    accs = [v["accuracy"] for v in ctx.val + [ctx.final.get("final_validation", {})]
            if v and v.get("accuracy") is not None]
    base = ctx.majority("validation")
    if rel >= NO_LEARNING_REL_CHANGE or not accs or base is None or max(accs) > base + NO_LEARNING_ACC_MARGIN:
        return None
    last = ctx.val[-1] if ctx.val else None
    preds = ""
    if last is not None:
        share = last["detail"].get("predicted_share") or {}
        if share:
            top = max(share, key=share.get)
            preds = f"; last validation predictions: {_pct(share[top])} '{top}'"
    hi = LR_RANGE.get(ctx.cfg.model.init, LR_RANGE["pretrained"])[1] if ctx.cfg else math.inf
    fix = [_lr_advice(ctx, "down" if ctx.lr is not None and ctx.lr > hi else "up")]
    if ctx.cfg:
        t = ctx.cfg.train
        if t.freeze_embeddings or t.freeze_layers:
            fix.append(f"unfreeze (train.freeze_layers={t.freeze_layers}, "
                       f"train.freeze_embeddings={str(t.freeze_embeddings).lower()})")
        if t.head_lr and t.head_lr < t.lr:
            fix.append(f"check train.head_lr={_g(t.head_lr)}")
    fix.append("check that data.label is the label column (labels must depend on the text)")
    return Finding(
        "no_learning", "error", "the model is not learning: loss flat from the start",
        f"{what} {', '.join(_f(x) for x in losses)} over {len(losses)} {unit} "
        f"({_pct(rel)} change, threshold {_pct(NO_LEARNING_REL_CHANGE)}); best validation accuracy "
        f"{_f(max(accs))} vs majority baseline {_f(base)}{preds}",
        "; ".join(fix))


def _divergence(ctx: _Ctx) -> Finding | None:
    hits: list[tuple[dict, str]] = []
    for rows in (ctx.train, ctx.val, list(ctx.final.values())):
        bad = [r for r in rows if r["loss"] is not None and not _finite(r["loss"])]
        if bad:
            name = bad[0]["split"].replace("_", " ")
            hits.append((bad[0], f"{name} loss is {_f(bad[0]['loss'])} at {_ep(bad[0])}"))
    limit = DIVERGE_LOSS_FACTOR * ctx.ln_k
    for t in ctx.train:
        if _finite(t["loss"]) and t["loss"] > limit:
            hits.append((t, f"train loss averaged {_f(t['loss'])} over the epoch ending at {_ep(t)}, "
                            f"{t['loss'] / ctx.ln_k:.1f}x ln({ctx.k})={_f(ctx.ln_k)} (uniform guessing)"))
            break
    for a, b in zip(ctx.train, ctx.train[1:]):
        if _finite(a["loss"]) and _finite(b["loss"]) and b["loss"] >= DIVERGE_RISE * a["loss"] \
                and b["loss"] - a["loss"] >= DIVERGE_MIN_ABS_RISE * ctx.ln_k:
            hits.append((b, f"train loss rose {_f(a['loss'])} -> {_f(b['loss'])} "
                            f"({b['loss'] / a['loss']:.1f}x) at {_ep(b)}"))
            break
    finite_val = [v for v in ctx.val if _finite(v["loss"])]
    for prev, v in zip(finite_val, finite_val[1:]):
        if v["loss"] < DIVERGE_VAL_SPIKE * prev["loss"] or v["loss"] <= ctx.ln_k:
            continue
        t_now, t_prev = ctx.train_loss_at(v["step"]), ctx.train_loss_at(prev["step"])
        if t_now is None or t_prev is None or t_now < t_prev * (1 - STILL_FALLING_REL):
            continue  # train loss fell meanwhile: that is overfitting, not divergence
        hits.append((v, f"validation loss jumped {_f(prev['loss'])} -> {_f(v['loss'])} at {_ep(v)} "
                        f"while train loss did not fall ({_f(t_prev)} -> {_f(t_now)})"))
        break
    if not hits:
        return None
    first = min(hits, key=lambda h: h[0]["step"])[0]
    nonfinite = any(h[0]["loss"] is not None and not _finite(h[0]["loss"]) for h in hits)
    lr_now = first.get("lr") if first["split"] == "train" else None
    evidence = "; ".join(h[1] for h in hits)
    if lr_now:  # 0 at the end of a short linear schedule says nothing about the peak
        evidence += f"; lr at the end of that epoch {_g(float(f'{lr_now:.3g}'))}"
    fix = [_lr_advice(ctx, "down")]
    if ctx.cfg:
        t = ctx.cfg.train
        if not t.max_grad_norm:
            fix.append("turn gradient clipping on: train.max_grad_norm=1.0 (now 0 = off)")
        if not t.warmup_steps and t.warmup_ratio < 0.05:
            fix.append(f"add warmup: train.warmup_ratio=0.1 (now {_g(t.warmup_ratio)})")
        if nonfinite and t.precision == "bf16":
            fix.append("if it persists, train.precision=fp32")
    title = ("loss became NaN/inf" if nonfinite else "training diverged (learning rate too high)") \
        + f", first at epoch {first['epoch']:g}"
    return Finding("divergence", "error", title, evidence, "; ".join(fix))


def _collapse(ctx: _Ctx, divergence: bool) -> Finding | None:
    parts, any_hit = [], False
    for split, r in _final_or_last(ctx):
        name = split.replace("final_", "").replace("_", " ")
        base = ctx.majority(split)
        ref = _prior_ref(ctx, r)
        c = _collapsed(r)
        near_prior = (base is not None and ref and _finite(r["loss"]) and r["accuracy"] is not None
                      and abs(r["accuracy"] - base) <= BASELINE_ACC_MARGIN
                      and abs(r["loss"] - ref) <= PRIOR_LOSS_TOL * ref)
        if not c and not near_prior:
            continue
        any_hit = True
        dist = _label_dist(r["detail"]) or {}
        s = f"{name}:"
        if c:
            s += (f" {_pct(c[1])} of predictions are '{c[0]}' (its true share {_pct(dist.get(c[0]))}), "
                  f"mean recall of the other classes {_pct(c[2])};")
        s += f" accuracy {_f(r['accuracy'])} vs majority baseline {_f(base)}"
        if ref:
            s += f", loss {_f(r['loss'])} vs {_f(ref)} for always predicting the training prior"
        parts.append(s)
    if not any_hit:
        return None
    collapsed_vals = sum(1 for v in ctx.val if _collapsed(v))
    if ctx.val:
        parts.append(f"collapsed at {collapsed_vals} of {len(ctx.val)} validation evaluations")
    bal = ctx.data.get("train_class_balance") or {}
    if bal:
        parts.append(f"training prior entropy {_f(prior_entropy(bal))} nats "
                     f"(largest class {_pct(max(bal.values()))})")
    tl = [t["loss"] for t in ctx.train if _finite(t["loss"])]
    still_learning = (len(tl) >= 2 and tl[-1] <= tl[-2] * (1 - STILL_FALLING_REL)
                      and bal and tl[-1] < prior_entropy(bal))
    if tl:
        parts.append(f"train loss per epoch {', '.join(_f(x) for x in tl)}")
    steps = max([r["step"] for r in ctx.train + ctx.val] or [0])
    lo = LR_RANGE.get(ctx.cfg.model.init, LR_RANGE["pretrained"])[0] if ctx.cfg else 0.0
    if divergence:
        fix = ["a consequence of the divergence above: " + _lr_advice(ctx, "down")]
    elif steps < MIN_STEPS_TO_JUDGE:
        cut = f" (train.max_steps={ctx.cfg.train.max_steps})" if ctx.cfg and ctx.cfg.train.max_steps else ""
        plural = "s" if steps != 1 else ""
        fix = [f"the run took only {steps} optimizer step{plural}{cut}, too few to learn anything: "
               f"train for at least a few epochs before changing train.lr"]
    elif still_learning:
        fix = [f"the train loss is still falling ({_f(tl[-2])} -> {_f(tl[-1])}, below the prior entropy), "
               "so the model has not separated the classes yet: train longer (train.epochs) or "
               + _lr_advice(ctx, "up")]
    elif ctx.lr is not None and ctx.lr < lo:
        fix = ["the learning rate is too low to leave the prior: " + _lr_advice(ctx, "up")]
    else:
        fix = [_lr_advice(ctx, "down")]
        if ctx.cfg:
            t = ctx.cfg.train
            if not t.warmup_steps and t.warmup_ratio < 0.1:
                fix.append(f"add warmup: train.warmup_ratio=0.1 (now {_g(t.warmup_ratio)})")
            elif not t.warmup_steps:
                fix.append(f"longer warmup: train.warmup_ratio={_g(min(2 * t.warmup_ratio, 0.3))} "
                           f"(now {_g(t.warmup_ratio)})")
            if bal and max(bal.values()) >= 0.6 and t.class_weights == "none":
                fix.append("the classes are imbalanced: try train.class_weights=balanced")
            elif t.class_weights == "balanced":
                fix.append("check train.class_weights (now balanced)")
    return Finding("collapse", "error", "predictions collapsed onto one class / the label prior",
                   "; ".join(parts), "; ".join(fix))


def _overfitting(ctx: _Ctx) -> list[Finding]:
    vals = [v for v in ctx.val if _finite(v["loss"])]
    if len(vals) < OVERFIT_MIN_EVALS_AFTER + 1:
        return []
    m = min(range(len(vals)), key=lambda i: vals[i]["loss"])
    best, after = vals[m], vals[m + 1:]
    out = []
    rise = vals[-1]["loss"] / best["loss"] - 1 if best["loss"] > 0 else 0.0
    if len(after) < OVERFIT_MIN_EVALS_AFTER or rise < OVERFIT_MIN_RISE:
        return []
    t_best, t_last = ctx.train_loss_at(best["step"]), ctx.train_loss_at(vals[-1]["step"])
    if t_best is None or t_last is None or t_last >= t_best:
        return []
    kept = ctx.final.get("final_validation")
    metric = ctx.cfg.train.metric if ctx.cfg else "accuracy"
    kept_txt = (f"; the kept checkpoint (train.metric={metric}) is from epoch {kept['epoch']:g}"
                if kept else "")
    n_train = (ctx.data.get("sizes") or {}).get("train")
    fix = [f"stop at the best epoch: train.epochs={math.ceil(best['epoch'])} or train.early_stopping=2 "
           f"with train.metric=loss"]
    reg = "regularise: more training data" + (f" (now {n_train} examples)" if n_train else "")
    if ctx.cfg:
        md = ctx.cfg.model
        drop = "model default" if md.dropout < 0 else _g(md.dropout)
        reg += (f", model.dropout=0.2 / model.head.dropout=0.3 (now {drop} / {_g(md.head.dropout)}), "
                f"train.weight_decay=0.1 (now {_g(ctx.cfg.train.weight_decay)})")
    fix.append(reg)
    fix.append(_lr_advice(ctx, "down"))
    out.append(Finding(
        "overfitting", "warning", f"overfitting after epoch {best['epoch']:g}",
        f"validation loss reached its minimum {_f(best['loss'])} at {_ep(best)}, then "
        f"{_series(after)} over the next {len(after)} evaluations (+{_pct(rise)}); train loss fell "
        f"{_f(t_best)} -> {_f(t_last)}; validation accuracy {_f(best['accuracy'])} at the best "
        f"epoch, {_f(vals[-1]['accuracy'])} at the end{kept_txt}",
        "; ".join(fix)))
    return out


def _overconfidence(ctx: _Ctx) -> Finding | None:
    vals = [v for v in ctx.val if _finite(v["loss"]) and v["accuracy"] is not None]
    if len(vals) < 2:
        return None
    m = min(range(len(vals)), key=lambda i: vals[i]["loss"])
    best, last = vals[m], vals[-1]
    if m == len(vals) - 1 or best["loss"] <= 0:
        return None
    rise = last["loss"] / best["loss"] - 1
    gain = last["accuracy"] - best["accuracy"]
    if rise < OVERCONFIDENT_LOSS_RISE or gain < OVERCONFIDENT_ACC_GAIN:
        return None
    metric = ctx.cfg.train.metric if ctx.cfg else "accuracy"
    fix = ["the model grows over-confident on the examples it gets wrong: add "
           "train.label_smoothing=0.1"]
    if metric == "loss":
        fix.append("train.metric=loss picks the low-loss checkpoint, not the accurate one: use "
                   "train.metric=accuracy or macro_f1")
    else:
        fix.append(f"keep selecting checkpoints by train.metric={metric}; do not early-stop on loss")
    fix.append("calibrate (temperature scaling) if you use the probabilities")
    return Finding(
        "overconfidence", "warning", "validation accuracy improves while validation loss rises",
        f"from {_ep(best)} to {_ep(last)}: validation accuracy {_f(best['accuracy'])} -> "
        f"{_f(last['accuracy'])} (+{100 * gain:.1f} points) while validation loss "
        f"{_f(best['loss'])} -> {_f(last['loss'])} (+{_pct(rise)})",
        "; ".join(fix))


def _mismatch(ctx: _Ctx) -> Finding | None:
    parts = []
    for split, r in _final_or_last(ctx):
        base, ref = ctx.majority(split), _prior_ref(ctx, r)
        if base is None or not ref or not _finite(r["loss"]) or r["accuracy"] is None:
            continue
        if r["accuracy"] < base - MISMATCH_ACC_MARGIN and r["loss"] < MISMATCH_LOSS_RATIO * ref:
            parts.append(f"{split.replace('final_', '')}: accuracy {_f(r['accuracy'])} is below the "
                         f"majority baseline {_f(base)} although loss {_f(r['loss'])} is well below "
                         f"{_f(ref)} (always predicting the training prior)")
    if not parts:
        return None
    return Finding(
        "metric_loss_mismatch", "warning", "accuracy and loss disagree",
        "; ".join(parts),
        "check that validation/test use the same label names and order as train (data.labels), "
        "that data.label is the right column, and the effect of train.class_weights")


def _underfitting(ctx: _Ctx) -> Finding | None:
    tr = [t for t in ctx.train if _finite(t["loss"]) and t["accuracy"] is not None]
    if len(tr) < 2 or not ctx.val or ctx.val[-1]["accuracy"] is None:
        return None
    a, b, v = tr[-2], tr[-1], ctx.val[-1]
    rising = (b["accuracy"] - a["accuracy"] >= UNDERFIT_RISING
              and b["loss"] <= a["loss"] * (1 - STILL_FALLING_REL))
    if not rising or b["accuracy"] >= UNDERFIT_MAX_TRAIN_ACC or b["accuracy"] - v["accuracy"] > UNDERFIT_GAP:
        return None
    fix = []
    if ctx.cfg:
        t = ctx.cfg.train
        fix.append(f"train longer: train.epochs={2 * t.epochs} (now {t.epochs})")
        lo, hi = LR_RANGE.get(ctx.cfg.model.init, LR_RANGE["pretrained"])
        if t.lr * 3 <= hi:
            fix.append(f"or raise train.lr to {_g(float(f'{3 * t.lr:.1g}'))} (now {_g(t.lr)})")
        if t.freeze_layers or t.freeze_embeddings:
            fix.append("unfreeze layers (train.freeze_layers=0, train.freeze_embeddings=false)")
        if t.max_steps:
            fix.append(f"train.max_steps={t.max_steps} cut the run short")
    else:
        fix.append("train longer (train.epochs) or raise train.lr")
    return Finding(
        "underfitting", "warning", "train accuracy low and still rising at the last epoch",
        f"train accuracy {_f(a['accuracy'])} -> {_f(b['accuracy'])} in the last epoch (ending {_ep(b)}), "
        f"train loss {_f(a['loss'])} -> {_f(b['loss'])}; validation accuracy {_f(v['accuracy'])}: "
        f"train accuracy is low ({_pct(b['accuracy'])} < {_pct(UNDERFIT_MAX_TRAIN_ACC)}) and within "
        f"{_pct(UNDERFIT_GAP)} of validation",
        "; ".join(fix))


def _still_improving(ctx: _Ctx) -> Finding | None:
    if len(ctx.val) < 2 or not ctx.cfg:
        return None
    metric = ctx.cfg.train.metric
    vals = [v for v in ctx.val if v.get(metric) is not None and _finite(v[metric])]
    if len(vals) < 2:
        return None
    key = (lambda v: -v[metric]) if metric == "loss" else (lambda v: v[metric])
    best = max(vals, key=key)
    last, prev = vals[-1], vals[-2]
    epochs = ctx.cfg.train.epochs
    loss_falls = _finite(last["loss"]) and _finite(prev["loss"]) and last["loss"] < prev["loss"]
    if best is not last or not loss_falls:
        return None
    return Finding(
        "still_improving", "info", "best validation score at the last evaluation",
        f"validation {metric} {_f(prev[metric])} -> {_f(last[metric])} and loss {_f(prev['loss'])} -> "
        f"{_f(last['loss'])} at {_ep(last)}",
        f"more epochs may still help: train.epochs={epochs + max(1, epochs // 2)} (now {epochs})")


def _padding(ctx: _Ctx) -> list[Finding]:
    out = []
    waste = ctx.data.get("train_padding_waste")
    tc = ctx.cfg.train if ctx.cfg else None
    ml = ctx.cfg.encode.max_length if ctx.cfg else None
    if _finite(waste) and waste > PADDING_WASTE_MAX:
        ev = (f"{_pct(waste)} of the token slots in train batches are padding "
              f"(threshold {_pct(PADDING_WASTE_MAX)}); mean length {_f(ctx.data.get('mean_tokens'), 1)} "
              f"tokens, encode.max_length={ml}")
        n = (ctx.data.get("sizes") or {}).get("train")
        if tc is not None and not tc.bucket:
            out.append(Finding("padding_waste", "warning", "most compute goes to padding tokens",
                               ev + ", train.bucket=false",
                               "set train.bucket=true (length-bucketed batches); or lower encode.max_length"))
        else:
            few = f"; only {math.ceil(n / tc.batch_size)} batches per epoch, too few to bucket" \
                if (tc and n and n < 10 * tc.batch_size) else ""
            out.append(Finding("padding_waste", "info", "much of the batch compute is padding",
                               ev + f", train.bucket=true{few}",
                               "lower encode.max_length (cuts the long tail) or train.batch_size"))
    trunc = ctx.data.get("truncated_share") or {}
    tr = trunc.get("train")
    if _finite(tr) and tr > TRUNCATED_SHARE_MAX:
        others = ", ".join(f"{k} {_pct(v)}" for k, v in trunc.items() if k != "train")
        fix = f"raise encode.max_length (now {ml}; try {2 * ml})" if ml else "raise encode.max_length"
        if ctx.cfg and ctx.info.get("task") == "pair":
            fix += f", or choose which text to cut: encode.truncation (now {ctx.cfg.encode.truncation})"
        out.append(Finding(
            "truncation", "warning", "many examples are cut at encode.max_length",
            f"{_pct(tr)} of training examples reach encode.max_length={ml} (threshold "
            f"{_pct(TRUNCATED_SHARE_MAX)}; {others}); mean length after truncation "
            f"{_f(ctx.data.get('mean_tokens'), 1)} tokens", fix))
    return out


def _incomplete(ctx: _Ctx, status: str) -> Finding | None:
    if status == "completed" and "test" in ctx.final:
        return None
    msg = ctx.info.get("message") or ""
    return Finding(
        "incomplete", "info", f"run is {status}: diagnosed from what was logged so far",
        f"{len(ctx.train)} train and {len(ctx.val)} validation events, "
        f"{'a' if 'test' in ctx.final else 'no'} test event" + (f"; message: {msg}" if msg else ""),
        "resume it: encoderlab resume RUN" if status == "interrupted" else
        "read the message; fix the cause and start the run again" if status == "failed" else
        "wait for the run to finish, then diagnose again")


# -- public API --------------------------------------------------------------------------------


def _order(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


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
                             "resume it: encoderlab resume RUN" if status == "interrupted" else
                             "read the message; fix the cause and start the run again" if status == "failed"
                             else "wait for the run to finish, then diagnose again"))
    return found


def diagnose(run: Run) -> list[Finding]:
    """Findings for one run, errors first; a healthy run has no error or warning."""
    if kinds.kind_of(run) == "pretraining":
        return _order(_pretrain_findings(run))
    ctx = _read(run)
    found: list[Finding] = []
    inc = _incomplete(ctx, run.status)
    nl = _no_learning(ctx)
    div = _divergence(ctx)
    for f in (nl, div):
        if f:
            found.append(f)
    if not nl:  # a model that never learned predicts the prior: that collapse is explained
        col = _collapse(ctx, divergence=div is not None)
        if col:
            found.append(col)
        und = _underfitting(ctx) if not div else None
        if und:
            found.append(und)
        found += _overfitting(ctx)
        for rule in (_overconfidence, _mismatch):
            f = rule(ctx)
            if f:
                found.append(f)
        if not (und or div or col or any(f.code == "overfitting" for f in found)):
            f = _still_improving(ctx)
            if f:
                found.append(f)
    found += _padding(ctx)
    if inc:
        found.append(inc)
    return _order(found)


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


# -- groups of runs ----------------------------------------------------------------------------


def config_key(run: Run) -> str:
    """The resolved config as canonical JSON, without the keys that do not change what is trained
    (IGNORED_KEYS: name, group, seed, fold, threads, device): runs with equal keys are repeats."""
    flat = C.flatten(C.to_dict(run.config()))
    for k in IGNORED_KEYS:
        flat.pop(k, None)
    return json.dumps(flat, sort_keys=True, default=str)


def _test_accuracy(run: Run) -> float | None:
    acc = None
    for ev in run.events():
        if ev.get("split") == "test":
            acc = (ev.get("metrics") or {}).get("accuracy")
    return acc


def diagnose_group(runs: list[Run]) -> list[Finding]:
    """Cross-run findings: seed variance per config, config rankings smaller than that noise,
    configs compared on a single seed each."""
    groups: dict[str, list[tuple[Run, float]]] = {}
    skipped = []
    for r in runs:
        acc = _test_accuracy(r)
        try:
            key = config_key(r)
        except Exception:  # unreadable config.toml: cannot tell which config it repeats
            key = None
        if r.status != "completed" or acc is None or not _finite(acc) or key is None:
            skipped.append(r.id)
            continue
        groups.setdefault(key, []).append((r, acc))
    found: list[Finding] = []
    if skipped:
        found.append(Finding("group_skipped", "info", f"{len(skipped)} run(s) without a test score ignored",
                             "not completed, no test accuracy or no readable config: " + ", ".join(skipped[:5])
                             + (" ..." if len(skipped) > 5 else ""),
                             "finish or resume them (encoderlab resume RUN) to include them"))
    if not groups:
        return _order(found)
    # name each config by the keys that differ between configs
    flats = {k: json.loads(k) for k in groups}
    keys = sorted({key for f in flats.values() for key in f})
    varying = [key for key in keys
               if len({json.dumps(f.get(key), sort_keys=True) for f in flats.values()}) > 1]
    label = {k: ", ".join(f"{key}={flats[k].get(key)}" for key in varying) or "the config" for k in groups}
    stats = {}
    for k, members in groups.items():
        accs = [a for _, a in members]
        stats[k] = (statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else None, accs, members)
    means = [s[0] for s in stats.values()]
    diffs = [abs(a - b) for i, a in enumerate(means) for b in means[i + 1:]]
    mean_diff = statistics.fmean(diffs) if diffs else None
    test_n = None
    for _, (_, _, _, members) in stats.items():
        test_n = ((members[0][0].info.get("data") or {}).get("sizes") or {}).get("test")
        break
    for k, (mean, std, accs, members) in stats.items():
        if std is None:
            continue
        noisy_abs = std > SEED_STD_MAX
        noisy_rel = mean_diff is not None and mean_diff > 0 and std >= SEED_NOISE_RATIO * mean_diff
        if not (noisy_abs or noisy_rel):
            continue
        seeds = []
        for run, a in members:
            try:
                c = run.config()
                tag = f"seed {c.train.seed}" + (f"/fold {c.data.fold}" if c.data.folds else "")
            except Exception:
                tag = run.id
            seeds.append(f"{tag}: {_f(a)}")
        why = []
        if noisy_abs:
            why.append(f"above {100 * SEED_STD_MAX:.0f} points")
        if mean_diff is not None:
            why.append(f"mean difference between the {len(stats)} configs {100 * mean_diff:.1f} points")
        gran = f"; one test example = {100 / test_n:.2f} points (test size {test_n})" if test_n else ""
        found.append(Finding(
            "seed_variance", "warning", f"large seed variance for {label[k]}",
            f"test accuracy {'; '.join(seeds)} -> mean {_f(mean)}, std {100 * std:.1f} points "
            f"({'; '.join(why)}){gran}",
            "report mean +- std over >= 3 seeds (sweep seeds = [0, 1, 2, 3, 4]) and compare configs by "
            "their means; stabilise training (warmup train.warmup_ratio=0.1, lower train.lr, more "
            "epochs); use a larger test set (data.max_eval=0)"))
    repeated = {k: s for k, s in stats.items() if s[1] is not None}
    if len(repeated) >= 2:
        ranked = sorted(repeated.items(), key=lambda kv: -kv[1][0])
        (k1, s1), (k2, s2) = ranked[0], ranked[1]
        gap = s1[0] - s2[0]
        noise = max(s1[1], s2[1])
        if gap < noise:
            found.append(Finding(
                "within_noise", "warning", "the best config does not beat the runner-up beyond seed noise",
                f"{label[k1]}: {_f(s1[0])} +- {_f(s1[1])} ({len(s1[2])} runs) vs {label[k2]}: "
                f"{_f(s2[0])} +- {_f(s2[1])} ({len(s2[2])} runs): difference {100 * gap:.1f} points < "
                f"seed std {100 * noise:.1f} points",
                "do not pick a winner yet: add seeds (sweep seeds) until the difference exceeds the "
                "std, or call them equivalent"))
    if len(stats) >= 2 and all(s[1] is None for s in stats.values()):
        found.append(Finding(
            "single_seed", "info", f"{len(stats)} configs compared on one seed each",
            "differences between configs: " + ", ".join(f"{label[k]}: {_f(s[0])}" for k, s in stats.items()),
            "seed noise cannot be told apart from real differences: add sweep seeds = [0, 1, 2]"))
    return _order(found)
