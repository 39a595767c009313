"""Tables read from the run store: per-epoch history, final scores, run listings.

Rows are plain dicts so the CLI can print them as a terminal table, JSON or CSV."""

from __future__ import annotations

from encoderlab.store.runs import Run


def epoch_table(run: Run) -> list[dict]:
    """One row per evaluation: train loss/acc since the previous one, validation loss/acc/F1.

    Rows are keyed by step, so evaluations every N steps and per-epoch ones line up; a resumed
    run's repeated events (same step) keep the newest."""
    rows: dict[int, dict] = {}
    for ev in run.events():
        split, m = ev["split"], ev.get("metrics", {})
        if split not in ("train", "validation"):
            continue
        row = rows.setdefault(ev["step"], {"epoch": ev["epoch"], "step": ev["step"]})
        if split == "train":
            row.update(train_loss=m.get("loss"), train_acc=m.get("accuracy"),
                       seconds=m.get("seconds"), tokens_per_s=m.get("tokens_per_s"), lr=m.get("lr"))
        else:
            # every validation metric as val_<name> too (multilabel / regression runs have their own)
            row.update(epoch=ev["epoch"], val_loss=m.get("loss"), val_acc=m.get("accuracy"),
                       val_f1=m.get("macro_f1"), **{f"val_{k}": v for k, v in m.items() if k != "loss"})
    return _by_step(rows)


def _by_step(rows: dict[int, dict]) -> list[dict]:
    """Rows in step order with the cumulative training time (`elapsed`) added."""
    out = sorted(rows.values(), key=lambda r: r["step"])
    elapsed = 0.0
    for r in out:
        elapsed += r.get("seconds") or 0.0
        r["elapsed"] = elapsed
    return out


def final_scores(run: Run) -> dict[str, dict]:
    """{'test': {...}, 'final_validation': {...}} (pretraining runs: 'final_heldout') from the
    last such events, with detail."""
    out = {}
    for ev in run.events():
        if ev["split"] in ("test", "final_validation", "final_heldout"):
            out[ev["split"]] = {**ev.get("metrics", {}), **ev.get("detail", {}), "step": ev.get("step")}
    return out


def pretrain_table(run: Run) -> list[dict]:
    """One row per held-out evaluation of a pretraining run: train MLM loss since the previous
    one, held-out MLM loss, masked-token accuracy, sentence-pair accuracy, top-1 token share."""
    rows: dict[int, dict] = {}
    for ev in run.events():
        split, m = ev["split"], ev.get("metrics", {})
        if split not in ("pretrain", "heldout"):
            continue
        row = rows.setdefault(ev["step"], {"epoch": ev["epoch"], "step": ev["step"]})
        if split == "pretrain":
            row.update(train_mlm_loss=m.get("mlm_loss"), train_pair_acc=m.get("pair_accuracy"),
                       seconds=m.get("seconds"), tokens_per_s=m.get("tokens_per_s"))
        else:
            row.update(epoch=ev["epoch"], mlm_loss=m.get("mlm_loss"), mlm_acc=m.get("mlm_accuracy"),
                       pair_acc=m.get("pair_accuracy"), top1_share=m.get("top1_share"))
    return _by_step(rows)
