"""The pretraining recipe: masked language modelling (+ next-sentence or sentence-order
prediction) on an unlabelled corpus -> a stored run whose model/ fine-tunes as model.path = "run:ID".

    setup (corpus -> tokens -> examples, BERT/ALBERT *ForPreTraining) -> loop (mask, step,
    held-out eval, checkpoint) -> best checkpoint -> warnings -> save model + tokenizer

A separate straight line from fit.py; it shares only small helpers (optimizer groups, schedule,
checkpoints, autocast, the run store). Masks and sentence-pair choices are drawn from generators
seeded by (train.seed, epoch, batch), so a resumed run sees exactly what an uninterrupted one
would; held-out masks are seeded by data.split_seed, so runs with different seeds are scored on
the same masked positions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from encoderlab import machine
from encoderlab import config as C
from encoderlab.data.corpus import duplicate_share, read_corpus
from encoderlab.data.dataset import resolve_columns
from encoderlab.encode.mlm import (Examples, Special, Tokens, cap, make_batch, make_examples,  # noqa: F401
                                   mask_tokens, special_ids, split_heldout, tokenize)
from encoderlab.encode.text import eval_batches, padding_waste, train_batches
from encoderlab.errors import ConfigError
from encoderlab.models import classifier
from encoderlab.store import atomic
from encoderlab.store import space
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train import checkpoint
from encoderlab.faults import fault
from encoderlab.train.loop import (Callback, Diverged, ProgressBar, StepTimer, autocast, emitter, graceful_stop,
                                   pick_device, reopen)
from encoderlab.train.optim import apply_step, make_optimizer, make_scheduler

FAMILIES = ("bert", "albert")   # model types with an MLM head and a sentence-pair head
# -- warning thresholds --------------------------------------------------------------------------
# duplicates: more than 10% of the corpus lines repeat an earlier line
DUPLICATE_MAX = 0.10
# plateau: a final held-out MLM loss above 90% of the corpus's unigram entropy means the model
# predicts little more than token frequencies (the "stuck near 7" failure)
PLATEAU_RATIO = 0.90
# collapse: one token is >= 30% of all predictions at masked positions, and >= 3x its true share
COLLAPSE_SHARE = 0.30
COLLAPSE_RATIO = 3.0


# -- examples --------------------------------------------------------------------------------------

class Pretrainer(nn.Module):
    """A BERT/ALBERT *ForPreTraining model as `encoder` (so optimizer groups and checkpoints work as
    in fit). The MLM head scores only the masked positions: (M, V) logits, not (B, T, V)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.encoder = net

    def parts(self):
        """(base encoder, MLM head, sentence-pair head) of the family."""
        net = self.encoder
        if net.config.model_type == "albert":
            return net.albert, net.predictions, net.sop_classifier
        return net.bert, net.cls.predictions, net.cls.seq_relationship

    def forward(self, input_ids, attention_mask, token_type_ids, mlm_labels, pair_labels):
        base, mlm_head, pair_head = self.parts()
        out = base(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        chosen = mlm_labels != -100                                   # (B, T)
        logits = mlm_head(out.last_hidden_state[chosen]).float()      # (M, V)
        mlm_loss = nn.functional.cross_entropy(logits, mlm_labels[chosen])
        result = {"mlm_loss": mlm_loss, "logits": logits, "targets": mlm_labels[chosen]}
        has_pair = pair_labels != -100
        if has_pair.any():
            pair_logits = pair_head(out.pooler_output[has_pair]).float()     # (P, 2)
            result.update(pair_loss=nn.functional.cross_entropy(pair_logits, pair_labels[has_pair]),
                          pair_logits=pair_logits, pair_targets=pair_labels[has_pair])
        result["loss"] = mlm_loss + result.get("pair_loss", 0.0)
        return result


def build_model(cfg: C.ExperimentConfig, store_root=None):
    """(Pretrainer, tokenizer, model folder): random init of the architecture, or continued
    pretraining of a checkpoint's encoder (its MLM/pair heads are new unless it has them)."""
    from transformers import AlbertForPreTraining, BertForPreTraining
    from transformers.utils import logging as hf_logging
    folder, config, tokenizer = classifier.prepare(cfg.model, store_root)
    if config.model_type not in FAMILIES:
        raise ConfigError(f"model.path: pretraining supports {', '.join(FAMILIES)} models; "
                          f"{cfg.model.path} is '{config.model_type}'")
    cls = AlbertForPreTraining if config.model_type == "albert" else BertForPreTraining
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()      # new MLM/pair heads on a plain encoder are expected
    try:
        net = cls.from_pretrained(folder, config=config) if cfg.model.init == "pretrained" else cls(config)
    finally:
        hf_logging.set_verbosity(verbosity)
    if len(tokenizer) > net.get_input_embeddings().num_embeddings:
        net.resize_token_embeddings(len(tokenizer))
    return Pretrainer(net), tokenizer, folder


# -- setup -----------------------------------------------------------------------------------------

@dataclass
class Setup:
    cfg: C.ExperimentConfig
    model: Pretrainer
    tokenizer: object
    tokens: Tokens
    train: Examples
    heldout: Examples
    special: Special
    device: torch.device
    summary: dict
    model_source: str


def _check(cfg: C.ExperimentConfig) -> None:
    pc = cfg.pretrain
    if not 0 < pc.mask_rate < 1:
        raise ConfigError(f"pretrain.mask_rate must be between 0 and 1, got {pc.mask_rate}")
    if not 0 < pc.heldout_fraction <= 0.5:
        raise ConfigError(f"pretrain.heldout_fraction must be in (0, 0.5], got {pc.heldout_fraction}")
    if not 0 <= pc.pair_swap <= 1:
        raise ConfigError(f"pretrain.pair_swap must be between 0 and 1, got {pc.pair_swap}")
    if pc.pair_swap and pc.objective != "mlm":
        raise ConfigError(f"pretrain.pair_swap is an augmentation for objective 'mlm'; with "
                          f"'{pc.objective}' the pair order carries the label")
    if cfg.encode.max_length < 8:
        raise ConfigError(f"encode.max_length = {cfg.encode.max_length} is too short to pretrain on")


def unigram_entropy(tok: Tokens, sentences: np.ndarray, special: Special, vocab: int) -> float:
    """Entropy (nats) of the training tokens' frequencies: the MLM loss of a model that ignores
    context and predicts the corpus's token frequencies."""
    ids = np.concatenate([tok.ids[i] for i in sentences] + [np.zeros(0, np.int64)])
    counts = np.bincount(ids, minlength=vocab)[:vocab]
    counts[special.all[special.all < vocab]] = 0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def setup(cfg: C.ExperimentConfig, store_root=None) -> Setup:
    tc, pc = cfg.train, cfg.pretrain
    _check(cfg)
    machine.apply_threads(tc.threads)
    torch.manual_seed(tc.seed)
    data = resolve_columns(cfg.data) if cfg.data.source.startswith("builtin:") else cfg.data
    corpus = read_corpus(data.source, data.text, data.text_pair, data.format)
    model, tokenizer, folder = build_model(cfg, store_root)
    sp = special_ids(tokenizer)
    tok = tokenize(tokenizer, corpus)
    ex = make_examples(tok, pairs=pc.objective != "mlm" or bool(data.text_pair), max_length=cfg.encode.max_length)
    if pc.objective != "mlm" and not (ex.second >= 0).any():
        raise ConfigError(f"pretrain.objective = '{pc.objective}' needs sentence pairs: a .txt corpus whose "
                          "documents (separated by blank lines) have several lines, or data.text_pair")
    train, heldout = split_heldout(ex, tok, pc.heldout_fraction, cfg.data.split_seed)
    train = cap(train, cfg.data.max_train, cfg.data.split_seed)
    heldout = cap(heldout, cfg.data.max_eval, cfg.data.split_seed)
    if not len(train) or not len(heldout):
        raise ConfigError(f"the corpus gives {len(train)} training and {len(heldout)} held-out examples; "
                          "it needs both (more text, or another pretrain.heldout_fraction)")
    device = pick_device(tc.device)
    model.to(device)
    dup, top, top_n = duplicate_share(corpus.sentences)
    train_sent = np.unique(np.concatenate([train.first, train.second[train.second >= 0]]))
    summary = {
        "task": "pretrain", "objective": pc.objective, "source": corpus.files,
        "sizes": {"train": len(train), "heldout": len(heldout)},
        "pairs": {"train": int((train.second >= 0).sum()), "heldout": int((heldout.second >= 0).sum())},
        "sentences": len(corpus), "documents": int(len(np.unique(corpus.doc))),
        "train_tokens": int(sum(len(tok.ids[i]) for i in train_sent)),
        "vocab_size": len(tokenizer), "unigram_entropy": unigram_entropy(tok, train_sent, sp, len(tokenizer)),
        "duplicate_share": dup, "most_repeated": {"text": top[:80], "count": top_n},
        "mean_tokens": float(train.lengths.mean()),
        "truncated_share": float((train.lengths >= cfg.encode.max_length).mean()),
        "train_padding_waste": padding_waste(train.lengths, train_batches(train.lengths, tc.batch_size, 0, tc.bucket)),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    source = cfg.model.path if cfg.model.path.startswith(("arch:", "builtin:")) else str(Path(folder).resolve())
    return Setup(cfg, model, tokenizer, tok, train, heldout, sp, device, summary, source)


# -- evaluation and warnings -----------------------------------------------------------------------

@torch.inference_mode()
def evaluate(s: Setup, ex: Examples) -> tuple[dict, dict]:
    """Held-out MLM loss, masked-token accuracy, sentence-pair accuracy and the share of the most
    predicted token; masks are seeded by data.split_seed, the same at every evaluation."""
    s.model.eval()
    V = len(s.tokenizer)
    tot = {"mlm_loss": 0.0, "masked": 0, "correct": 0, "pair_loss": 0.0, "pairs": 0, "pair_correct": 0}
    predicted, targets = np.zeros(V, np.int64), np.zeros(V, np.int64)
    for i, idx in enumerate(eval_batches(ex.lengths, s.cfg.train.eval_batch_size)):
        rng = np.random.default_rng([s.cfg.data.split_seed, 7919, i])
        batch = make_batch(ex, s.tokens, idx, s.cfg.pretrain, s.cfg.encode.max_length, s.special, rng)
        with autocast(s.device, s.cfg.train.precision):
            out = s.model(**{k: v.to(s.device) for k, v in batch.items()})
        pred, gold = out["logits"].argmax(1).cpu().numpy(), out["targets"].cpu().numpy()
        tot["mlm_loss"] += out["mlm_loss"].item() * len(gold)
        tot["masked"] += len(gold)
        tot["correct"] += int((pred == gold).sum())
        predicted += np.bincount(pred, minlength=V)[:V]
        targets += np.bincount(gold, minlength=V)[:V]
        if "pair_loss" in out:
            n = len(out["pair_targets"])
            tot["pair_loss"] += out["pair_loss"].item() * n
            tot["pairs"] += n
            tot["pair_correct"] += int((out["pair_logits"].argmax(1) == out["pair_targets"]).sum())
    s.model.train()
    top = int(predicted.argmax())
    n = max(tot["masked"], 1)
    metrics = {"mlm_loss": tot["mlm_loss"] / n, "mlm_accuracy": tot["correct"] / n,
               "perplexity": math.exp(min(tot["mlm_loss"] / n, 50)), "top1_share": float(predicted[top] / n)}
    if tot["pairs"]:
        metrics.update(pair_loss=tot["pair_loss"] / tot["pairs"], pair_accuracy=tot["pair_correct"] / tot["pairs"])
    detail = {"top1_token": s.tokenizer.convert_ids_to_tokens(top), "top1_target_share": float(targets[top] / n),
              "masked_tokens": tot["masked"], "pairs": tot["pairs"]}
    return metrics, detail


def warning(code: str, title: str, evidence: str, fix: str) -> dict:
    return {"code": code, "title": title, "evidence": evidence, "fix": fix}


def corpus_warnings(summary: dict) -> list[dict]:
    """Known failure modes visible before training: a corpus of repeated lines."""
    if summary["duplicate_share"] <= DUPLICATE_MAX:
        return []
    top = summary["most_repeated"]
    return [warning("duplicate_lines", "heavy duplicate lines in the corpus",
                    f"{summary['duplicate_share']:.0%} of the {summary['sentences']} lines repeat an earlier "
                    f"line; the most repeated one ({top['count']}x): \"{top['text']}\"",
                    "deduplicate the corpus: repeated lines are memorised, inflate the held-out score "
                    "(the same line lands on both sides) and teach little")]


def model_warnings(metrics: dict, detail: dict, summary: dict) -> list[dict]:
    """Known failure modes of a trained model, from its final held-out scores."""
    out = []
    H = summary["unigram_entropy"]
    if metrics["mlm_loss"] >= PLATEAU_RATIO * H:
        out.append(warning(
            "unigram_plateau", "MLM loss at the unigram-entropy plateau",
            f"held-out MLM loss {metrics['mlm_loss']:.3f} vs unigram entropy {H:.3f} of the corpus "
            f"(a model that ignores context and predicts token frequencies scores ~{H:.2f}); "
            f"masked-token accuracy {metrics['mlm_accuracy']:.3f}",
            "train longer (train.epochs) or with a higher train.lr and warmup; check that the corpus "
            "is large and varied enough and that encode.max_length keeps some context"))
    share, true_share = metrics["top1_share"], detail["top1_target_share"]
    if share >= COLLAPSE_SHARE and share >= COLLAPSE_RATIO * max(true_share, 1e-9):
        out.append(warning(
            "one_token_everywhere", f"the model predicts '{detail['top1_token']}' almost everywhere",
            f"'{detail['top1_token']}' is {share:.0%} of the predictions at masked positions but "
            f"{true_share:.1%} of the true tokens there",
            "the model has collapsed to the most frequent token: train longer, lower train.lr if "
            "the loss jumped, and check the corpus is not dominated by one token"))
    return out


# -- the recipe ------------------------------------------------------------------------------------

def pretrain(cfg: C.ExperimentConfig, store: RunStore, *, resume: Run | None = None,
             callback: Callback | None = None, progress: bool = True) -> Run:
    """Pretrain (or continue) one run; returns it completed, or raises after marking it."""
    if resume is not None:
        cfg = resume.config()
    if cfg.encode.add_tokens:
        raise ConfigError("encode.add_tokens is for fine-tuning; pretraining learns a tokenizer's whole "
                          "vocabulary instead: set model.tokenizer to one from `encoderlab tokenizer train`")
    s = setup(cfg, store.root)
    tc = cfg.train
    opt = make_optimizer(s.model, tc)
    batches_per_epoch = math.ceil(len(s.train) / tc.batch_size)
    total = math.ceil(batches_per_epoch / tc.grad_accum) * tc.epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    sched = make_scheduler(opt, tc, total)
    fresh = {"loss": 0.0, "seen": 0, "mlm_loss": 0.0, "masked": 0, "correct": 0, "pair_loss": 0.0, "pairs": 0,
             "pair_correct": 0, "tokens": 0, "seconds": 0.0}
    state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "train": dict(fresh)}
    if resume is None:
        run = store.create(cfg, [], task="pretrain", data=s.summary, model_source=s.model_source,
                           **machine.run_fields(tc.precision, tc.threads, s.device))
        emit = emitter(run, callback)
        for w in corpus_warnings(s.summary):
            emit({"split": "warning", "step": 0, "epoch": 0.0, "metrics": {}, "detail": w})
    else:
        run = resume
        state = reopen(run, s.model, opt, sched, state)
        emit = emitter(run, callback)
    ckpt_dir = run.dir / "checkpoints"
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)

    def save() -> None:
        checkpoint.save(ckpt_dir, s.model, opt, sched, state)
        checkpoint.prune(ckpt_dir, tc.keep_checkpoints, {f"step-{state['best']['step']}"} if state["best"] else set())

    def eval_and_save(epoch_float: float) -> None:
        metrics, detail = evaluate(s, s.heldout)
        emit({"split": "heldout", "step": state["step"], "epoch": epoch_float, "metrics": metrics, "detail": detail})
        if state["best"] is None or metrics["mlm_loss"] < state["best"]["value"]:
            state["best"] = {"metric": "mlm_loss", "value": metrics["mlm_loss"], "step": state["step"],
                             "epoch": epoch_float}
        save()
        run.update(steps_done=state["step"], epochs_done=int(epoch_float), best_metric="mlm_loss",
                   best_value=state["best"]["value"])

    bar = ProgressBar(progress, total, state["step"], label="pretrain")
    timer = StepTimer()
    s.model.train()
    with store.running(run, state), graceful_stop() as stop_asked, bar:
        for epoch in range(state["epoch"], tc.epochs):
            batches = train_batches(s.train.lengths, tc.batch_size, seed=tc.seed * 100003 + epoch,
                                    bucket=tc.bucket)
            tr = state["train"]
            timer.start()
            for b in range(state["batch"], len(batches), tc.grad_accum):
                group = batches[b:b + tc.grad_accum]
                n_ex = sum(len(g) for g in group)
                for j, idx in enumerate(group):
                    rng = np.random.default_rng([tc.seed, epoch, b + j])
                    batch = make_batch(s.train, s.tokens, idx, cfg.pretrain, cfg.encode.max_length,
                                       s.special, rng)
                    batch = {k: v.to(s.device) for k, v in batch.items()}
                    with autocast(s.device, tc.precision):
                        out = s.model(**batch)
                    loss = out["loss"].item()
                    if not math.isfinite(loss):
                        raise Diverged(state["step"] + 1, loss, "pretraining loss")
                    (out["loss"] * (len(idx) / n_ex)).backward()
                    tr["loss"] += loss * len(idx)
                    tr["seen"] += len(idx)
                    m = len(out["targets"])
                    tr["mlm_loss"] += out["mlm_loss"].item() * m
                    tr["masked"] += m
                    tr["correct"] += int((out["logits"].argmax(1) == out["targets"]).sum())
                    if "pair_loss" in out:
                        p = len(out["pair_targets"])
                        tr["pair_loss"] += out["pair_loss"].item() * p
                        tr["pairs"] += p
                        tr["pair_correct"] += int((out["pair_logits"].argmax(1) == out["pair_targets"]).sum())
                    tr["tokens"] += int(batch["attention_mask"].sum())
                fault("step")
                apply_step(s.model, opt, sched, tc.max_grad_norm, tr)
                state["step"] += 1
                state["batch"] = b + len(group)
                running = tr["mlm_loss"] / max(tr["masked"], 1)
                if state["step"] % max(1, steps_per_epoch // 20) == 0:
                    tr.setdefault("curve", []).append([state["step"], running])
                bar.advance(epoch, running)
                if stop_asked["n"]:        # SIGTERM / Ctrl-C: keep exactly this step, then stop
                    timer.pause(tr)
                    save()
                    raise KeyboardInterrupt
                done = tc.max_steps and state["step"] >= tc.max_steps
                if tc.eval_every_steps and state["step"] % tc.eval_every_steps == 0 and not done \
                        and state["batch"] < len(batches):
                    with timer.paused(tr):
                        eval_and_save(epoch + state["batch"] / len(batches))
                elif tc.save_every_steps and state["step"] % tc.save_every_steps == 0 and not done:
                    with timer.paused(tr):
                        save()
                if done:
                    break
            timer.pause(tr)
            frac = state["batch"] / len(batches)
            metrics = {"loss": tr["loss"] / max(tr["seen"], 1), "mlm_loss": tr["mlm_loss"] / max(tr["masked"], 1),
                       "mlm_accuracy": tr["correct"] / max(tr["masked"], 1),
                       "lr": sched.get_last_lr()[0], "seconds": tr["seconds"],
                       "tokens_per_s": tr["tokens"] / max(tr["seconds"], 1e-9)}
            if tr["pairs"]:
                metrics.update(pair_loss=tr["pair_loss"] / tr["pairs"],
                               pair_accuracy=tr["pair_correct"] / tr["pairs"])
            if "grad_norm_max" in tr:
                metrics["grad_norm_max"] = tr["grad_norm_max"]
            emit({"split": "pretrain", "step": state["step"], "epoch": epoch + frac, "metrics": metrics,
                  "detail": {"loss_curve": tr.get("curve", [])}})
            state.update(epoch=epoch + 1 if frac >= 1 else epoch, batch=0 if frac >= 1 else state["batch"],
                         train=dict(fresh))
            eval_and_save(epoch + frac)
            if tc.max_steps and state["step"] >= tc.max_steps:
                break
        return _finish(run, s, state, emit)


def _finish(run: Run, s: Setup, state: dict, emit) -> Run:
    """Reload the best checkpoint, score it on the held-out split, warn, save model + tokenizer."""
    best = run.dir / "checkpoints" / f"step-{state['best']['step']}"
    checkpoint.load_weights(best, s.model)
    metrics, detail = evaluate(s, s.heldout)
    emit({"split": "final_heldout", "step": state["best"]["step"], "epoch": state["best"]["epoch"],
          "metrics": metrics, "detail": {**detail, "checkpoint": best.name}})
    for w in model_warnings(metrics, detail, s.summary):
        emit({"split": "warning", "step": state["best"]["step"], "epoch": state["best"]["epoch"],
              "metrics": {}, "detail": w})
    save_model(s, run.dir / "model", {"objective": s.cfg.pretrain.objective,
                                      "max_length": s.cfg.encode.max_length, "best_checkpoint": best.name,
                                      "heldout": metrics})
    run.update(status="completed", finished=now(), message="")
    space.lean_completed(run.dir)
    return run


def save_model(s: Setup, folder: Path, meta: dict) -> None:
    """The *ForPreTraining model and tokenizer in Hugging Face format: AutoModel.from_pretrained
    loads the encoder, `model.path = "run:ID"` fine-tunes it, and pretraining can continue from it."""
    from transformers.utils import logging as hf_logging
    folder.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        s.model.encoder.save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    s.tokenizer.save_pretrained(folder)
    atomic.write_json(folder / "pretrain.json", meta)
