"""The per-run diagnose rules: each looks at a `RunContext` and returns a Finding (or None / a
list). Train loss/accuracy are running means over an epoch (with dropout on), so "flat" and
"rising" are judged epoch to epoch, not step to step."""

from __future__ import annotations

import math

from encoderlab.analysis.findings import Finding, finite, fmt, g, pct, unfinished_fix
from encoderlab.metrics import LOWER_IS_BETTER, resolve_metric
from encoderlab.analysis.run_evidence import RunContext, at, label_dist, prior_entropy, prior_loss, series
from encoderlab.analysis.thresholds import (
    BASELINE_ACC_MARGIN, COLLAPSE_OTHER_RECALL, COLLAPSE_SHARE, DIVERGE_LOSS_FACTOR, DIVERGE_MIN_ABS_RISE,
    DIVERGE_RISE, DIVERGE_VAL_SPIKE, LR_RANGE, MIN_STEPS_TO_JUDGE, MISMATCH_ACC_MARGIN, MISMATCH_LOSS_RATIO,
    NO_LEARNING_ACC_MARGIN, NO_LEARNING_REL_CHANGE, OVERCONFIDENT_ACC_GAIN, OVERCONFIDENT_LOSS_RISE,
    OVERFIT_MIN_EVALS_AFTER, OVERFIT_MIN_RISE, PADDING_WASTE_MAX, PRIOR_LOSS_TOL, STILL_FALLING_REL,
    TRUNCATED_SHARE_MAX, UNDERFIT_GAP, UNDERFIT_MAX_TRAIN_ACC, UNDERFIT_RISING, ALL_UNK_SHARE_MAX, UNK_SHARE_MAX)


def _metric(ctx: RunContext) -> str:
    """The metric the run picked its checkpoint by (train.metric "auto" resolved for its task)."""
    return resolve_metric(ctx.cfg.train.metric, ctx.data.get("task") or ctx.info.get("task") or "single")


def _lr_advice(ctx: RunContext, direction: str) -> str:
    """'train.lr=X -> Y' moving the LR by 10x in `direction` ('down'|'up'), noting the usual range."""
    if ctx.lr is None:
        return "lower train.lr 10x" if direction == "down" else "raise train.lr 10x"
    init = ctx.cfg.model.init
    lo, hi = LR_RANGE.get(init, LR_RANGE["pretrained"])
    lr = ctx.lr
    if direction == "down":
        note = f"; usual for model.init={init}: {g(lo)}..{g(hi)}" if lr > hi else ""
        if lr / 10 > 10 * hi:  # far off: 10x lower would still diverge, go to the top of the range
            return f"lower train.lr to {g(hi)} (now {g(lr)}{note})"
        return f"lower train.lr 10x: train.lr={g(float(f'{lr / 10:.2g}'))} (now {g(lr)}{note})"
    new = lr * 10 if lr >= lo / 10 else math.sqrt(lo * hi)
    note = f", far below the usual {g(lo)}..{g(hi)} for model.init={init}" if lr < lo else ""
    return f"raise train.lr: train.lr={g(float(f'{new:.1g}'))} (now {g(lr)}{note})"


def _prior_ref(ctx: RunContext, r: dict) -> float | None:
    bal = ctx.data.get("train_class_balance")
    dist = label_dist(r.get("detail") or {})
    if not bal or not dist:
        return None
    weighted = bool(ctx.cfg and ctx.cfg.train.class_weights == "balanced")
    return prior_loss(bal, dist, weighted)


def collapsed(r: dict) -> tuple[str, float, float] | None:
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


def _final_or_last(ctx: RunContext) -> list[tuple[str, dict]]:
    """The evaluations the user gets: final validation + test, or the last validation so far."""
    out = [(s, ctx.final[s]) for s in ("test", "final_validation") if s in ctx.final]
    if not out and ctx.val:
        out = [("validation", ctx.val[-1])]
    return out


# -- the rules ---------------------------------------------------------------------------------


def _no_learning(ctx: RunContext) -> Finding | None:
    series, what, unit = [t for t in ctx.train if finite(t["loss"])], "train loss", "epochs"
    if len(series) < 2:
        series, what, unit = [v for v in ctx.val if finite(v["loss"])], "validation loss", "evaluations"
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
            preds = f"; last validation predictions: {pct(share[top])} '{top}'"
    hi = LR_RANGE.get(ctx.cfg.model.init, LR_RANGE["pretrained"])[1] if ctx.cfg else math.inf
    fix = [_lr_advice(ctx, "down" if ctx.lr is not None and ctx.lr > hi else "up")]
    if ctx.cfg:
        t = ctx.cfg.train
        if t.freeze_embeddings or t.freeze_layers:
            fix.append(f"unfreeze (train.freeze_layers={t.freeze_layers}, "
                       f"train.freeze_embeddings={str(t.freeze_embeddings).lower()})")
        if t.head_lr and t.head_lr < t.lr:
            fix.append(f"check train.head_lr={g(t.head_lr)}")
    fix.append("check that data.label is the label column (labels must depend on the text)")
    return Finding(
        "no_learning", "error", "the model is not learning: loss flat from the start",
        f"{what} {', '.join(fmt(x) for x in losses)} over {len(losses)} {unit} "
        f"({pct(rel)} change, threshold {pct(NO_LEARNING_REL_CHANGE)}); best validation accuracy "
        f"{fmt(max(accs))} vs majority baseline {fmt(base)}{preds}",
        "; ".join(fix))


def _divergence(ctx: RunContext) -> Finding | None:
    hits: list[tuple[dict, str]] = []
    for rows in (ctx.train, ctx.val, list(ctx.final.values())):
        bad = [r for r in rows if r["loss"] is not None and not finite(r["loss"])]
        if bad:
            name = bad[0]["split"].replace("_", " ")
            hits.append((bad[0], f"{name} loss is {fmt(bad[0]['loss'])} at {at(bad[0])}"))
    limit = DIVERGE_LOSS_FACTOR * ctx.ln_k
    for t in ctx.train:
        if finite(t["loss"]) and t["loss"] > limit:
            hits.append((t, f"train loss averaged {fmt(t['loss'])} over the epoch ending at {at(t)}, "
                            f"{t['loss'] / ctx.ln_k:.1f}x ln({ctx.k})={fmt(ctx.ln_k)} (uniform guessing)"))
            break
    for a, b in zip(ctx.train, ctx.train[1:]):
        if finite(a["loss"]) and finite(b["loss"]) and b["loss"] >= DIVERGE_RISE * a["loss"] \
                and b["loss"] - a["loss"] >= DIVERGE_MIN_ABS_RISE * ctx.ln_k:
            hits.append((b, f"train loss rose {fmt(a['loss'])} -> {fmt(b['loss'])} "
                            f"({b['loss'] / a['loss']:.1f}x) at {at(b)}"))
            break
    finite_val = [v for v in ctx.val if finite(v["loss"])]
    for prev, v in zip(finite_val, finite_val[1:]):
        if v["loss"] < DIVERGE_VAL_SPIKE * prev["loss"] or v["loss"] <= ctx.ln_k:
            continue
        t_now, t_prev = ctx.train_loss_at(v["step"]), ctx.train_loss_at(prev["step"])
        if t_now is None or t_prev is None or t_now < t_prev * (1 - STILL_FALLING_REL):
            continue  # train loss fell meanwhile: that is overfitting, not divergence
        hits.append((v, f"validation loss jumped {fmt(prev['loss'])} -> {fmt(v['loss'])} at {at(v)} "
                        f"while train loss did not fall ({fmt(t_prev)} -> {fmt(t_now)})"))
        break
    if not hits:
        return None
    first = min(hits, key=lambda h: h[0]["step"])[0]
    nonfinite = any(h[0]["loss"] is not None and not finite(h[0]["loss"]) for h in hits)
    lr_now = first.get("lr") if first["split"] == "train" else None
    evidence = "; ".join(h[1] for h in hits)
    if lr_now:  # 0 at the end of a short linear schedule says nothing about the peak
        evidence += f"; lr at the end of that epoch {g(float(f'{lr_now:.3g}'))}"
    fix = [_lr_advice(ctx, "down")]
    if ctx.cfg:
        t = ctx.cfg.train
        if not t.max_grad_norm:
            fix.append("turn gradient clipping on: train.max_grad_norm=1.0 (now 0 = off)")
        if not t.warmup_steps and t.warmup_ratio < 0.05:
            fix.append(f"add warmup: train.warmup_ratio=0.1 (now {g(t.warmup_ratio)})")
        if nonfinite and t.precision == "bf16":
            fix.append("if it persists, train.precision=fp32")
    title = ("loss became NaN/inf" if nonfinite else "training diverged (learning rate too high)") \
        + f", first at epoch {first['epoch']:g}"
    return Finding("divergence", "error", title, evidence, "; ".join(fix))


def _collapse(ctx: RunContext, divergence: bool) -> Finding | None:
    parts, any_hit = [], False
    for split, r in _final_or_last(ctx):
        name = split.replace("final_", "").replace("_", " ")
        base = ctx.majority(split)
        ref = _prior_ref(ctx, r)
        c = collapsed(r)
        near_prior = (base is not None and ref and finite(r["loss"]) and r["accuracy"] is not None
                      and abs(r["accuracy"] - base) <= BASELINE_ACC_MARGIN
                      and abs(r["loss"] - ref) <= PRIOR_LOSS_TOL * ref)
        if not c and not near_prior:
            continue
        any_hit = True
        dist = label_dist(r["detail"]) or {}
        s = f"{name}:"
        if c:
            s += (f" {pct(c[1])} of predictions are '{c[0]}' (its true share {pct(dist.get(c[0]))}), "
                  f"mean recall of the other classes {pct(c[2])};")
        s += f" accuracy {fmt(r['accuracy'])} vs majority baseline {fmt(base)}"
        if ref:
            s += f", loss {fmt(r['loss'])} vs {fmt(ref)} for always predicting the training prior"
        parts.append(s)
    if not any_hit:
        return None
    collapsed_vals = sum(1 for v in ctx.val if collapsed(v))
    if ctx.val:
        parts.append(f"collapsed at {collapsed_vals} of {len(ctx.val)} validation evaluations")
    bal = ctx.data.get("train_class_balance") or {}
    if bal:
        parts.append(f"training prior entropy {fmt(prior_entropy(bal))} nats "
                     f"(largest class {pct(max(bal.values()))})")
    tl = [t["loss"] for t in ctx.train if finite(t["loss"])]
    still_learning = (len(tl) >= 2 and tl[-1] <= tl[-2] * (1 - STILL_FALLING_REL)
                      and bal and tl[-1] < prior_entropy(bal))
    if tl:
        parts.append(f"train loss per epoch {', '.join(fmt(x) for x in tl)}")
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
        fix = [f"the train loss is still falling ({fmt(tl[-2])} -> {fmt(tl[-1])}, below the prior entropy), "
               "so the model has not separated the classes yet: train longer (train.epochs) or "
               + _lr_advice(ctx, "up")]
    elif ctx.lr is not None and ctx.lr < lo:
        fix = ["the learning rate is too low to leave the prior: " + _lr_advice(ctx, "up")]
    else:
        fix = [_lr_advice(ctx, "down")]
        if ctx.cfg:
            t = ctx.cfg.train
            if not t.warmup_steps and t.warmup_ratio < 0.1:
                fix.append(f"add warmup: train.warmup_ratio=0.1 (now {g(t.warmup_ratio)})")
            elif not t.warmup_steps:
                fix.append(f"longer warmup: train.warmup_ratio={g(min(2 * t.warmup_ratio, 0.3))} "
                           f"(now {g(t.warmup_ratio)})")
            if bal and max(bal.values()) >= 0.6 and t.class_weights == "none":
                fix.append("the classes are imbalanced: try train.class_weights=balanced")
            elif t.class_weights == "balanced":
                fix.append("check train.class_weights (now balanced)")
    return Finding("collapse", "error", "predictions collapsed onto one class / the label prior",
                   "; ".join(parts), "; ".join(fix))


def _overfitting(ctx: RunContext) -> list[Finding]:
    vals = [v for v in ctx.val if finite(v["loss"])]
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
    metric = _metric(ctx) if ctx.cfg else "accuracy"
    kept_txt = (f"; the kept checkpoint (train.metric={metric}) is from epoch {kept['epoch']:g}"
                if kept else "")
    n_train = (ctx.data.get("sizes") or {}).get("train")
    fix = [f"stop at the best epoch: train.epochs={math.ceil(best['epoch'])} or train.early_stopping=2 "
           f"with train.metric=loss"]
    reg = "regularise: more training data" + (f" (now {n_train} examples)" if n_train else "")
    if ctx.cfg:
        md = ctx.cfg.model
        drop = "model default" if md.dropout < 0 else g(md.dropout)
        reg += (f", model.dropout=0.2 / model.head.dropout=0.3 (now {drop} / {g(md.head.dropout)}), "
                f"train.weight_decay=0.1 (now {g(ctx.cfg.train.weight_decay)})")
    fix.append(reg)
    fix.append(_lr_advice(ctx, "down"))
    out.append(Finding(
        "overfitting", "warning", f"overfitting after epoch {best['epoch']:g}",
        f"validation loss reached its minimum {fmt(best['loss'])} at {at(best)}, then "
        f"{series(after)} over the next {len(after)} evaluations (+{pct(rise)}); train loss fell "
        f"{fmt(t_best)} -> {fmt(t_last)}; validation accuracy {fmt(best['accuracy'])} at the best "
        f"epoch, {fmt(vals[-1]['accuracy'])} at the end{kept_txt}",
        "; ".join(fix)))
    return out


def _overconfidence(ctx: RunContext) -> Finding | None:
    vals = [v for v in ctx.val if finite(v["loss"]) and v["accuracy"] is not None]
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
    metric = _metric(ctx) if ctx.cfg else "accuracy"
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
        f"from {at(best)} to {at(last)}: validation accuracy {fmt(best['accuracy'])} -> "
        f"{fmt(last['accuracy'])} (+{100 * gain:.1f} points) while validation loss "
        f"{fmt(best['loss'])} -> {fmt(last['loss'])} (+{pct(rise)})",
        "; ".join(fix))


def _mismatch(ctx: RunContext) -> Finding | None:
    parts = []
    for split, r in _final_or_last(ctx):
        base, ref = ctx.majority(split), _prior_ref(ctx, r)
        if base is None or not ref or not finite(r["loss"]) or r["accuracy"] is None:
            continue
        if r["accuracy"] < base - MISMATCH_ACC_MARGIN and r["loss"] < MISMATCH_LOSS_RATIO * ref:
            parts.append(f"{split.replace('final_', '')}: accuracy {fmt(r['accuracy'])} is below the "
                         f"majority baseline {fmt(base)} although loss {fmt(r['loss'])} is well below "
                         f"{fmt(ref)} (always predicting the training prior)")
    if not parts:
        return None
    return Finding(
        "metric_loss_mismatch", "warning", "accuracy and loss disagree",
        "; ".join(parts),
        "check that validation/test use the same label names and order as train (data.labels), "
        "that data.label is the right column, and the effect of train.class_weights")


def _underfitting(ctx: RunContext) -> Finding | None:
    tr = [t for t in ctx.train if finite(t["loss"]) and t["accuracy"] is not None]
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
            fix.append(f"or raise train.lr to {g(float(f'{3 * t.lr:.1g}'))} (now {g(t.lr)})")
        if t.freeze_layers or t.freeze_embeddings:
            fix.append("unfreeze layers (train.freeze_layers=0, train.freeze_embeddings=false)")
        if t.max_steps:
            fix.append(f"train.max_steps={t.max_steps} cut the run short")
    else:
        fix.append("train longer (train.epochs) or raise train.lr")
    return Finding(
        "underfitting", "warning", "train accuracy low and still rising at the last epoch",
        f"train accuracy {fmt(a['accuracy'])} -> {fmt(b['accuracy'])} in the last epoch (ending {at(b)}), "
        f"train loss {fmt(a['loss'])} -> {fmt(b['loss'])}; validation accuracy {fmt(v['accuracy'])}: "
        f"train accuracy is low ({pct(b['accuracy'])} < {pct(UNDERFIT_MAX_TRAIN_ACC)}) and within "
        f"{pct(UNDERFIT_GAP)} of validation",
        "; ".join(fix))


def _still_improving(ctx: RunContext) -> Finding | None:
    if len(ctx.val) < 2 or not ctx.cfg:
        return None
    metric = _metric(ctx)
    vals = [v for v in ctx.val if v.get(metric) is not None and finite(v[metric])]
    if len(vals) < 2:
        return None
    key = (lambda v: -v[metric]) if metric in LOWER_IS_BETTER else (lambda v: v[metric])
    best = max(vals, key=key)
    last, prev = vals[-1], vals[-2]
    epochs = ctx.cfg.train.epochs
    loss_falls = finite(last["loss"]) and finite(prev["loss"]) and last["loss"] < prev["loss"]
    if best is not last or not loss_falls:
        return None
    return Finding(
        "still_improving", "info", "best validation score at the last evaluation",
        f"validation {metric} {fmt(prev[metric])} -> {fmt(last[metric])} and loss {fmt(prev['loss'])} -> "
        f"{fmt(last['loss'])} at {at(last)}",
        f"more epochs may still help: train.epochs={epochs + max(1, epochs // 2)} (now {epochs})")


def _padding(ctx: RunContext) -> list[Finding]:
    out = []
    waste = ctx.data.get("train_padding_waste")
    tc = ctx.cfg.train if ctx.cfg else None
    ml = ctx.cfg.encode.max_length if ctx.cfg else None
    if finite(waste) and waste > PADDING_WASTE_MAX:
        ev = (f"{pct(waste)} of the token slots in train batches are padding "
              f"(threshold {pct(PADDING_WASTE_MAX)}); mean length {fmt(ctx.data.get('mean_tokens'), 1)} "
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
    long = ctx.data.get("long", "head")
    # runs that record it judge the share of examples actually cut (longer than max_length); older
    # runs the share that reached max_length. Under chunks no text is dropped: nothing to warn about.
    trunc = ctx.data.get("cut_share") or ctx.data.get("truncated_share") or {}
    tr = trunc.get("train")
    if long != "chunks" and finite(tr) and tr > TRUNCATED_SHARE_MAX:
        others = ", ".join(f"{k} {pct(v)}" for k, v in trunc.items() if k != "train")
        fix = f"raise encode.max_length (now {ml}; try {2 * ml})" if ml else "raise encode.max_length"
        if ctx.cfg and ctx.info.get("task") == "pair":
            fix += f", or choose which text to cut: encode.truncation (now {ctx.cfg.encode.truncation})"
        elif "cut_share" in ctx.data:
            fix += (f", or choose what the model sees of a long text: encode.long (now {long}; tail, head+tail, "
                    "or chunks to score every window)")
        dropped = (ctx.data.get("dropped_share") or {}).get("train")
        what = (f"{pct(tr)} of training examples are longer than encode.max_length={ml}, dropping "
                f"{pct(dropped)} of the train text tokens") if "cut_share" in ctx.data else \
            f"{pct(tr)} of training examples reach encode.max_length={ml}"
        out.append(Finding(
            "truncation", "warning", "many examples are cut at encode.max_length",
            f"{what} (threshold {pct(TRUNCATED_SHARE_MAX)}; {others}); mean length after truncation "
            f"{fmt(ctx.data.get('mean_tokens'), 1)} tokens", fix))
    return out


def _unknown_tokens(ctx: RunContext) -> Finding | None:
    """The tokenizer cannot spell much of the text: [UNK] tokens, or examples made only of them."""
    vocab = ctx.data.get("vocabulary") or {}
    cov = vocab.get("splits") or {}
    if not cov:
        return None
    worst = max(cov, key=lambda k: cov[k]["unk_share"])
    worst_all = max(cov, key=lambda k: cov[k]["all_unk_share"])
    if cov[worst]["unk_share"] <= UNK_SHARE_MAX and cov[worst_all]["all_unk_share"] <= ALL_UNK_SHARE_MAX:
        return None
    ev = ("[UNK] share of the tokens " + ", ".join(f"{k} {pct(v['unk_share'])}" for k, v in cov.items())
          + f" (threshold {pct(UNK_SHARE_MAX)}); examples that are nothing but [UNK] "
          + ", ".join(f"{k} {pct(v['all_unk_share'])} ({v['all_unknown']})" for k, v in cov.items())
          + f" (threshold {pct(ALL_UNK_SHARE_MAX)})")
    chars, words, added = vocab.get("train_chars") or {}, vocab.get("train_words") or {}, vocab.get("added")
    if chars.get("distinct"):
        ev += (f"; train has {chars['distinct']} distinct unknown characters ({chars['occurrences']} "
               f"occurrences), most frequent: " + " ".join(u for u, _ in chars["top"][:10]))
    already = added["asked"] if added and added.get("unit") == "char" else 0
    if added:
        ev += f"; encode.add_tokens = {added['asked']} ({added['unit']}) already added {added['added']}"
    if chars.get("to_cover"):
        n = already + chars["to_cover"]
        fix = (f"encode.add_tokens = {n} (the {n} most frequent unknown characters of train cover "
               f"{pct(vocab.get('cover', 0.95))} of the [UNK] characters; new embeddings start from the mean)")
    elif words.get("to_cover"):
        fix = (f"encode.add_tokens = {words['to_cover']} with encode.add_tokens_unit = \"word\" (the "
               f"{words['to_cover']} most frequent unknown words of train cover {pct(vocab.get('cover', 0.95))} "
               "of the [UNK]s)")
    else:   # nothing unknown left in train: added tokens would never be trained for these [UNK]s
        fix = ("the [UNK]s are in validation / test only (characters train never shows), so "
               "encode.add_tokens cannot learn them: train on data that holds them")
    fix += ("; or train a tokenizer on your text (`encoderlab tokenizer train`) and pretrain with it "
            "(`encoderlab pretrain`, then model.path = \"run:ID\")")
    return Finding("unknown_tokens", "warning", "the tokenizer cannot spell much of the text ([UNK] tokens)",
                   ev, fix)


def _incomplete(ctx: RunContext, status: str) -> Finding | None:
    if status == "completed" and "test" in ctx.final:
        return None
    msg = ctx.info.get("message") or ""
    return Finding(
        "incomplete", "info", f"run is {status}: diagnosed from what was logged so far",
        f"{len(ctx.train)} train and {len(ctx.val)} validation events, "
        f"{'a' if 'test' in ctx.final else 'no'} test event" + (f"; message: {msg}" if msg else ""),
        unfinished_fix(status))


def run_findings(ctx: RunContext, status: str) -> list[Finding]:
    """Every per-run rule applied in order; rules explained by an earlier finding are skipped."""
    found: list[Finding] = []
    inc = _incomplete(ctx, status)
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
    unk = _unknown_tokens(ctx)
    if unk:
        found.append(unk)
    if inc:
        found.append(inc)
    return found
