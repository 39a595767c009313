"""The classification task's setup, shared by the recipes that train or score a classifier (fit,
lrfind, re-evaluation): data, label weights, model, tokenizer and encoded splits, built the same way
for a new run and a resumed one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from encoderlab import config as C
from encoderlab import machine
from encoderlab import tasks as T
from encoderlab.data.dataset import TaskData, load_data
from encoderlab.encode import series, unknown
from encoderlab.encode.long import Windows, for_training
from encoderlab.encode.text import Encoded, encode_split, padding_waste, train_batches
from encoderlab.errors import ConfigError, StoreError
from encoderlab.models import classifier
from encoderlab.train.loop import pick_device


@dataclass
class Setup:
    """Everything a run needs in memory, built the same way for a new run and a resumed one."""
    cfg: C.ExperimentConfig
    data: TaskData
    model: torch.nn.Module
    tokenizer: object
    enc: dict[str, Encoded]
    device: torch.device
    class_weights: torch.Tensor | None
    model_source: str = ""        # the folder model.path resolved to (run:NAME moves on; this not)
    save: Callable[[Path, dict], None] | None = None   # (folder, meta) -> the final model on disk
    task: T.Task | None = None    # loss, scores, thresholds / target scale of the run's task
    added: dict | None = None     # encode.add_tokens: the units added to the tokenizer


def setup(cfg: C.ExperimentConfig, store_root=None, label_names: list[str] | None = None) -> Setup:
    machine.apply_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    data, _ = load_data(cfg.data)
    if label_names is not None and label_names != data.label_names:
        raise StoreError("the data's labels changed since this run started; cannot resume it")
    task = T.for_run(data.task, data.label_names, data.train.labels, cfg.train)
    weights = task.weights if task.kind == "classification" else None
    device = pick_device(cfg.train.device)
    model, tokenizer, folder = classifier.build(cfg.model, len(data.label_names), store_root=store_root,
                                                loss_fn=None if task.kind == "classification" else task.loss,
                                                class_weights=weights, label_smoothing=cfg.train.label_smoothing)
    classifier.check_length(model.encoder.config, cfg.encode.max_length)
    state = None
    added = extend_vocabulary(cfg.encode, data, tokenizer, model) if cfg.encode.add_tokens else None
    if data.task == "sequence":
        if cfg.encode.long != "head":
            raise ConfigError(f"encode.long = '{cfg.encode.long}' applies to text; a numeric sequence keeps "
                              "its head (shorten it with [series] settings)")
        state = series.fit(cfg.series, data.train)
        tokenizer = series.extend(state, tokenizer, model, cfg.series.vocabulary, cfg.model.init)
        enc = {s: series.encode(state, getattr(data, s), tokenizer, cfg.encode.max_length)
               for s in ("train", "validation", "test")}
    else:
        ec = cfg.encode
        enc = {s: encode_split(tokenizer, getattr(data, s), ec.max_length, ec.truncation, ec.long, ec.stride,
                               ec.pool) for s in ("train", "validation", "test")}
    for e in enc.values():      # what the loss sees (regression: standardised targets)
        e.labels = task.train_labels(e.labels)
    model.to(device)
    source = cfg.model.path if cfg.model.path.startswith(("arch:", "builtin:")) else str(Path(folder).resolve())
    extra = {"series": state} if state else {}     # the fitted input scheme travels with the model
    return Setup(cfg, data, model, tokenizer, enc, device, weights, source,
                 lambda folder, meta: classifier.save(model, tokenizer, folder, {**meta, **extra, **task.meta()}),
                 task, added)


def extend_vocabulary(ec: C.EncodeConfig, data: TaskData, tokenizer, model) -> dict:
    """encode.add_tokens: the N most frequent unknown units of the TRAIN split become tokens (the
    validation and test texts never choose them); the tokenizer saved with the model keeps them."""
    if data.task == "sequence":
        raise ConfigError("encode.add_tokens: numeric series / images have no unknown text; "
                          "drop it for data.task = \"sequence\"")
    if tokenizer.init_kwargs.get("encoderlab_kind") == "ids":
        raise ConfigError("encode.add_tokens: an ID vocabulary has no characters or words to add; retrain "
                          "it with a lower min_frequency (`encoderlab tokenizer train --kind ids`) instead")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("encode.add_tokens needs a fast (Rust) tokenizer: the [UNK] pieces come from its offsets")
    texts = list(data.train.texts) + list(data.train.pairs or [])
    counts = unknown.unknown_units(tokenizer, texts, ec.add_tokens_unit)
    units = unknown.top(counts, ec.add_tokens)
    done = unknown.add_tokens(tokenizer, model.encoder, units)
    covered = sum(counts[u] for u in units)
    return {"unit": ec.add_tokens_unit, "asked": ec.add_tokens, **done, "candidates": len(counts),
            "covered_share": covered / max(sum(counts.values()), 1)}


def data_summary(s: Setup) -> dict:
    d = s.data
    top, base = d.majority_baseline("validation")
    train = for_training(s.enc["train"], 0)     # chunks: the windows an epoch trains on
    waste = padding_waste(train.lengths, train_batches(train.lengths, s.cfg.train.batch_size, 0, s.cfg.train.bucket))
    out = {"task": d.task, "num_labels": len(d.label_names),
            "sizes": {k: len(getattr(d, k)) for k in ("train", "validation", "test")},
            "majority_class": top, "majority_baseline_validation": base,
            "majority_baseline_test": d.majority_baseline("test")[1],
            "train_class_balance": d.class_balance("train"),
            "mean_tokens": float(train.lengths.mean()),
            "truncated_share": {k: e.at_limit / max(len(e), 1) for k, e in s.enc.items()},
            **_cut_summary(s),
            "train_padding_waste": waste,
            "parameters": sum(p.numel() for p in s.model.parameters())}
    if d.task != "sequence":                # what the tokenizer could not spell ([UNK]), per split
        train_texts = list(d.train.texts) + list(d.train.pairs or [])
        # chunks: counted over the windows (the tokens the model sees; overlaps count twice)
        ids = {k: (e.win if isinstance(e, Windows) else e).ids for k, e in s.enc.items()}
        out["vocabulary"] = unknown.summary(s.tokenizer, ids, train_texts)
        if s.added:
            out["vocabulary"]["added"] = s.added
    if s.task.kind != "classification":     # the task's trivial baseline (train-frequent labels / train mean)
        out["baseline"] = T.baseline(s.task, d.train.labels, {k: getattr(d, k).labels for k in ("validation", "test")})
    if s.task.kind == "regression":         # what diagnose compares predictions and targets with
        y = d.train.labels
        out["train_target"] = {"min": float(y.min()), "max": float(y.max()), "mean": float(y.mean()),
                               "std": float(y.std())}
        out["target_range"] = {k: [float(getattr(d, k).labels.min()), float(getattr(d, k).labels.max())]
                               for k in ("validation", "test")}
        out["outside_train_range"] = {k: float(np.mean((getattr(d, k).labels < y.min())
                                                       | (getattr(d, k).labels > y.max())))
                                      for k in ("validation", "test")}
    if s.task.kind == "multilabel":
        out["train_label_share"] = {n: float(v) for n, v in zip(d.label_names, d.train.labels.mean(0))}
        out["train_cardinality"] = float(d.train.labels.sum(1).mean())
    return out


def _cut_summary(s: Setup) -> dict:
    """Per split: the share of examples longer than encode.max_length and the share of their text
    tokens the model never sees (0 under chunks); under chunks also windows per document."""
    stats = {k: e.stats for k, e in s.enc.items() if getattr(e, "stats", None)}
    if not stats:       # numeric sequences
        return {}
    out = {"long": s.cfg.encode.long,
           "cut": {k: v["cut"] for k, v in stats.items()},
           "cut_share": {k: v["cut_share"] for k, v in stats.items()},
           "dropped_share": {k: v["dropped_share"] for k, v in stats.items()},
           "mean_text_tokens": {k: v["mean_text_tokens"] for k, v in stats.items()}}
    if s.cfg.encode.long == "chunks":
        out["windows"] = {k: {"mean": v["windows_mean"], "max": v["windows_max"], "total": v["windows"]}
                          for k, v in stats.items()}
    return out
