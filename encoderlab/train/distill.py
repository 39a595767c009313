"""The distillation recipe: teacher run -> student (teacher's kept layers, or a fresh [model]) ->
loop on soft + hard labels (+ hidden states / attention maps) -> best on validation -> test -> save.

One straight procedure beside fit.py, sharing its small helpers (evaluate, checkpoints, the
store, autocast, progress). The teacher's logits on the training split are computed once and
cached in the teacher's run folder; hidden-state / attention matching needs the teacher's inner
activations, so with those on the teacher runs forward on every batch instead.

    loss = soft_weight * T^2 * KL(softmax(t / T) || softmax(s / T))
         + (1 - soft_weight) * CE(s, labels)
         + hidden_weight * sum_i MSE(student hidden_i, teacher hidden_map(i))
         + attention_weight * sum_i MSE(student attention_i, teacher attention_map(i))
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from encoderlab import machine
from encoderlab import tasks
from encoderlab import config as C
from encoderlab import kinds
from encoderlab.models.layers import parse_layers, truncate
from encoderlab.data.dataset import load_data
from encoderlab.encode.text import collate, encode_split, train_batches
from encoderlab.errors import ConfigError, StoreError
from encoderlab.models import classifier
from encoderlab.store import space
from encoderlab.store.runs import Run, RunStore, now
from encoderlab.train import checkpoint
from encoderlab.train.loop import (ProgressBar, autocast, emitter, evaluate, pick_device, predict_logits,
                                   sigterm_as_interrupt, write_predictions)
from encoderlab.train.optim import apply_step, make_optimizer, make_scheduler


def layer_map(cc: C.CompressConfig, student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer output (1-based; 0 = embeddings) matched by student layer output i+1."""
    if cc.layer_map:
        if len(cc.layer_map) != student_layers:
            raise ConfigError(f"compress.layer_map has {len(cc.layer_map)} entries; the student has "
                              f"{student_layers} layers")
        if any(not 1 <= t <= teacher_layers for t in cc.layer_map):
            raise ConfigError(f"compress.layer_map entries must be within 1 .. {teacher_layers}")
        return list(cc.layer_map)
    return [round((i + 1) * teacher_layers / student_layers) for i in range(student_layers)]


def teacher_logits(teacher_run: Run, teacher, enc, cfg: C.ExperimentConfig, device) -> np.ndarray:
    """(N_train, num_labels) teacher logits, computed once per (data, encoding) and cached."""
    key = hashlib.sha256(json.dumps([C.to_dict(cfg.data), C.to_dict(cfg.encode), cfg.train.precision],
                                    sort_keys=True).encode()).hexdigest()[:12]
    path = teacher_run.dir / "cache" / f"train-logits-{key}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape[0] == len(enc):
            return cached
    logits = predict_logits(teacher, enc, cfg.train.eval_batch_size, device, cfg.train.precision)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, logits)
    tmp.replace(path)
    return logits


def _student(cfg: C.ExperimentConfig, teacher, tokenizer, num_labels: int, store_root):
    cc = cfg.compress
    if cc.student == "teacher":
        keep = parse_layers(cc.layers, teacher.encoder.config.num_hidden_layers)
        return truncate(copy.deepcopy(teacher), keep), keep
    if cc.layers:
        raise ConfigError("compress.layers picks teacher layers; with compress.student = \"model\" size the "
                          "student with model.num_layers / hidden_size / num_heads / intermediate_size")
    model, tok, _ = classifier.build(cfg.model, num_labels, label_smoothing=cfg.train.label_smoothing,
                                     store_root=store_root)
    if tok.get_vocab() != tokenizer.get_vocab():
        raise ConfigError("the student's tokenizer differs from the teacher's; distillation feeds both the "
                          "same token ids (use the teacher's model.path / model.tokenizer)")
    return model, []


def _forward(model, batch: dict, hidden: bool, attention: bool):
    """Classifier forward that can also return hidden states and attention maps."""
    kw = {"token_type_ids": batch["token_type_ids"]} \
        if model.uses_token_types and "token_type_ids" in batch else {}
    out = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        output_hidden_states=hidden, output_attentions=attention, **kw)
    logits = model.head(classifier.pool(out.last_hidden_state, batch["attention_mask"], model.pooling)).float()
    return logits, out.hidden_states, out.attentions


def student_config(teacher, file: str | None, overrides) -> C.ExperimentConfig:
    """The teacher's config, then the experiment file's keys over it, then the overrides;
    compress.teacher = the teacher's id."""
    base = C.to_dict(teacher.config())
    base["name"] = f"{teacher.info['name']}-distill"
    if file:
        _merge(base, C.load_raw(file))
    cfg = C.load(None, overrides, base=base)
    return C.replace(cfg, **{"compress.teacher": teacher.id})


def _merge(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def distill(cfg: C.ExperimentConfig, store: RunStore, *, progress: bool = True, callback=None) -> Run:
    """Train a student on the teacher run `cfg.compress.teacher`; returns the completed run."""
    cc, tc = cfg.compress, cfg.train
    if cfg.encode.add_tokens:
        raise ConfigError("encode.add_tokens: a distilled student reads its teacher's tokenizer (with the "
                          "tokens the teacher run added); set it on the teacher's run instead")
    if not cc.teacher:
        raise ConfigError("compress.teacher is empty: name the fine-tuned run to distill from")
    teacher_run = store.get(cc.teacher)
    kinds.require(teacher_run, "distill")
    folder = teacher_run.dir / "model"
    machine.apply_threads(tc.threads)
    torch.manual_seed(tc.seed)
    device = pick_device(tc.device)
    teacher, tok, tmeta = classifier.load(folder)
    data, _ = load_data(cfg.data)
    if data.label_names != tmeta["labels"]:
        raise StoreError(f"the data's labels differ from teacher {teacher_run.id}'s; distill on its data")
    student, kept = _student(cfg, teacher, tok, len(data.label_names), store.root)
    for m in (teacher, student):
        classifier.check_length(m.encoder.config, cfg.encode.max_length)
    match_h, match_a = cc.hidden_weight > 0, cc.attention_weight > 0
    L_t, L_s = teacher.encoder.config.num_hidden_layers, student.encoder.config.num_hidden_layers
    mapping = layer_map(cc, L_s, L_t)
    proj = None
    if match_h and student.encoder.config.hidden_size != teacher.encoder.config.hidden_size:
        # a learned projection lets a narrower student match the teacher's hidden states (discarded after)
        proj = torch.nn.Linear(student.encoder.config.hidden_size, teacher.encoder.config.hidden_size)
    if match_a:
        if student.encoder.config.num_attention_heads != teacher.encoder.config.num_attention_heads:
            raise ConfigError("compress.attention_weight > 0 needs equal attention head counts")
        for m in (teacher, student):   # attention maps are only returned by the eager kernel
            m.encoder.set_attn_implementation("eager")
    student.train()
    teacher.to(device).eval()
    student.to(device)
    task = tasks.Task.from_meta(tmeta)     # the teacher's task: its loss, scores, target scale
    task.label_smoothing = tc.label_smoothing
    metric = tasks.resolve_metric(tc.metric, data.task)
    if cfg.encode.long == "chunks":
        raise ConfigError("distill: encode.long = 'chunks' is not supported (the soft labels are per example); "
                          "distill with encode.long = head, tail or head+tail")
    ec = cfg.encode
    enc = {s: encode_split(tok, getattr(data, s), ec.max_length, ec.truncation, ec.long)
           for s in ("train", "validation", "test")}
    for e in enc.values():      # what the losses see (regression: the teacher's standardised scale)
        e.labels = task.train_labels(e.labels)
    pad_id = tok.pad_token_id or 0
    t0 = time.perf_counter()
    cached = None if (match_h or match_a) else \
        torch.from_numpy(teacher_logits(teacher_run, teacher, enc["train"], cfg, device))
    teacher_seconds = time.perf_counter() - t0

    params = sum(p.numel() for p in student.parameters())
    run = store.create(cfg, data.label_names, task=data.task, model_source=f"run:{teacher_run.id}",
                       model=f"run:{teacher_run.id}",
                       parent=teacher_run.id, runtime=cc.runtime, parameters=params,
                       **machine.run_fields(tc.precision, tc.threads, device),
                       data={"task": data.task, "num_labels": len(data.label_names),
                             "sizes": {k: len(getattr(data, k)) for k in ("train", "validation", "test")},
                             "majority_baseline_validation": data.majority_baseline("validation")[1],
                             "majority_baseline_test": data.majority_baseline("test")[1],
                             "parameters": params},
                       distill={"layers_from_teacher": kept, "layer_map": mapping if (match_h or match_a) else [],
                                "teacher_logits_seconds": teacher_seconds, "teacher_logits_cached": cached is not None})
    emit = emitter(run, callback)
    opt = make_optimizer(student, tc)
    if proj is not None:
        opt.add_param_group({"params": list(proj.parameters()), "lr": tc.lr, "weight_decay": 0.0})
    steps_per_epoch = math.ceil(len(enc["train"]) / tc.batch_size)
    total = steps_per_epoch * tc.epochs if not tc.max_steps else min(tc.max_steps, steps_per_epoch * tc.epochs)
    sched = make_scheduler(opt, tc, total)
    T, a = cc.temperature, cc.soft_weight
    state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "bad_evals": 0}
    ckpt_dir = run.dir / "checkpoints"
    bar = ProgressBar(progress, total, 0, label="distill")
    with store.running(run, state, restarts="distill runs restart, they do not resume"), sigterm_as_interrupt(), bar:
        for epoch in range(tc.epochs):
            batches = train_batches(enc["train"].lengths, tc.batch_size, seed=tc.seed * 100003 + epoch,
                                    bucket=tc.bucket)
            sums, seen, t_ep = {"loss": 0.0, "soft": 0.0, "hard": 0.0, "hidden": 0.0, "attention": 0.0}, 0, \
                time.perf_counter()
            for idx in batches:
                batch = {k: v.to(device) for k, v in collate(enc["train"], idx, pad_id).items()}
                labels = batch.pop("labels")
                with autocast(device, tc.precision):
                    s_logits, s_h, s_a = _forward(student, batch, match_h, match_a)
                    if cached is not None:
                        t_logits, t_h, t_a = cached[idx].to(device), None, None
                    else:
                        with torch.no_grad():
                            t_logits, t_h, t_a = _forward(teacher, batch, match_h, match_a)
                soft = _soft_loss(task.kind, s_logits, t_logits.float(), T)
                hard = task.loss(s_logits, labels)
                loss = a * soft + (1 - a) * hard
                parts = {"soft": soft.item(), "hard": hard.item()}
                if match_h:
                    m = batch["attention_mask"].unsqueeze(-1).float()     # (B, T, 1): real tokens only
                    pairs = [(0, 0)] + [(i + 1, t) for i, t in enumerate(mapping)]
                    h = sum(((proj(s_h[i].float()) if proj is not None else s_h[i].float())
                             - t_h[t].float()).pow(2).mul(m).sum() / (m.sum() * t_h[t].shape[-1])
                            for i, t in pairs) / len(pairs)
                    loss = loss + cc.hidden_weight * h
                    parts["hidden"] = h.item()
                if match_a:
                    att = sum(F.mse_loss(s_a[i].float(), t_a[t - 1].float()) for i, t in enumerate(mapping)) \
                        / len(mapping)
                    loss = loss + cc.attention_weight * att
                    parts["attention"] = att.item()
                if not math.isfinite(loss.item()):
                    raise StoreError(f"distillation loss became {loss.item()} at step {state['step'] + 1}; "
                                     "lower train.lr")
                loss.backward()
                apply_step(student, opt, sched, tc.max_grad_norm)
                state["step"] += 1
                seen += len(idx)
                sums["loss"] += loss.item() * len(idx)
                for k, v in parts.items():
                    sums[k] += v * len(idx)
                bar.advance(epoch, sums["loss"] / seen)
                if tc.max_steps and state["step"] >= tc.max_steps:
                    break
            emit({"split": "train", "step": state["step"], "epoch": epoch + 1,
                  "metrics": {**{k: v / max(seen, 1) for k, v in sums.items() if v},
                              "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t_ep}})
            scores, _ = evaluate(student, enc["validation"], data.label_names, tc, device, task=task,
                                 labels=data.validation.labels)
            student.train()
            emit({"split": "validation", "step": state["step"], "epoch": epoch + 1,
                  "metrics": task.event(scores)[0]})
            value = scores[metric]
            if tasks.better(metric, value, None if state["best"] is None else state["best"]["value"]):
                state["best"] = {"metric": metric, "value": value, "step": state["step"], "epoch": epoch + 1}
            state["epoch"] = epoch + 1
            checkpoint.save(ckpt_dir, student, opt, sched, state)
            checkpoint.prune(ckpt_dir, tc.keep_checkpoints, {f"step-{state['best']['step']}"})
            run.update(steps_done=state["step"], epochs_done=epoch + 1, best_metric=metric,
                       best_value=state["best"]["value"])
            if tc.max_steps and state["step"] >= tc.max_steps:
                break
        return _finish(run, cfg, student, tok, data, enc, state, pad_id, device, emit, tmeta, kept, task)


def _soft_loss(kind: str, s_logits, t_logits, temperature: float):
    """The student's distance to the teacher's outputs: KL of the (B, K) softmaxes at temperature T
    (T^2 keeps the gradient scale independent of T); multilabel: binary cross-entropy to the
    teacher's sigmoids at T (x T^2); regression: squared error to the teacher's value."""
    T = temperature
    if kind == "regression":
        return F.mse_loss(s_logits[:, 0], t_logits[:, 0])
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(s_logits / T, torch.sigmoid(t_logits / T)) * T * T
    return F.kl_div(F.log_softmax(s_logits / T, -1), F.softmax(t_logits / T, -1), reduction="batchmean") * T * T


def _finish(run, cfg, student, tok, data, enc, state, pad_id, device, emit, tmeta, kept, task) -> Run:
    """Best checkpoint -> validation + test scores, predictions, saved model (served as cfg.compress.runtime
    once exported/quantized; the saved model itself is fp32 PyTorch)."""
    best = run.dir / "checkpoints" / f"step-{state['best']['step']}"
    checkpoint.load_weights(best, student)
    if cfg.compress.attention_weight > 0:
        student.encoder.set_attn_implementation("sdpa")
    (run.dir / "predictions").mkdir(exist_ok=True)
    results = {}
    for split in ("validation", "test"):
        labels = getattr(data, split).labels
        scores, logits = evaluate(student, enc[split], data.label_names, cfg.train, device, task=task, labels=labels)
        tuned = {}
        if split == "validation" and task.kind == "multilabel":     # the student's own thresholds
            tuned = task.tune(logits, labels)
            scores = task.scores(logits, labels, scores["loss"])
        results[split] = scores
        metrics, detail = task.event(scores)
        emit({"split": "final_validation" if split == "validation" else "test", "step": state["best"]["step"],
              "epoch": state["best"]["epoch"], "metrics": metrics,
              "detail": {**detail, "checkpoint": best.name, **({"thresholds": tuned} if tuned else {})}})
        write_predictions(run.dir / "predictions" / f"{split}.csv", getattr(data, split), logits, data.label_names,
                          task)
    meta = {k: v for k, v in tmeta.items() if k != "pooling"}
    classifier.save(student, tok, run.dir / "model", {**meta, **task.meta(), "best_checkpoint": best.name,
                                                      "layers_from_teacher": kept})
    test = results["test"]
    run.update(status="completed", finished=now(), test_accuracy=test.get("accuracy", test.get("subset_accuracy")),
               test_macro_f1=test.get("macro_f1"), test_scores=task.event(test)[0], message="")
    space.lean_completed(run.dir)
    return run
