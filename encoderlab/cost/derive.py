"""New stored runs derived from a fine-tuned run: layer truncation, dynamic int8 (torchao, or the
deprecated torch.ao path), ONNX export.

A derived run is an ordinary run folder: its config is the parent's with `[compress]` filled in
(teacher, layers, runtime), its `model/` is a complete classifier folder (plus `model.onnx` /
`model.int8.onnx` for exported runs), and it is scored on the parent's validation and test splits
through the runtime it is served with, so `compare`, `show` and the trade-off table read it like any
other run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from encoderlab import config as C
from encoderlab import kinds
from encoderlab import tasks as T
from encoderlab.cost.runtime import ONNX_FILES, QUANTIZERS, Predictor, export_onnx, quantize_onnx, quantizer_of
from encoderlab.data.dataset import load_data
from encoderlab.encode.long import Windows
from encoderlab.errors import ConfigError
from encoderlab.encode.text import Encoded, collate, encode_split, eval_batches
from encoderlab.models.layers import parse_layers, truncate
from encoderlab.models import classifier
from encoderlab.store import atomic
from encoderlab.store.runs import Run, RunStore, now


def new_run(store: RunStore, parent: Run, name: str, **compress) -> tuple[Run, C.ExperimentConfig]:
    """A run whose config is the parent's with name and [compress] keys replaced."""
    base = parent.config()
    teacher = compress.pop("teacher", parent.id)
    cfg = C.replace(base, name=name, group=base.group, **{"compress.teacher": teacher},
                    **{f"compress.{k}": v for k, v in compress.items()})
    run = store.create(cfg, parent.labels(), task=parent.info.get("task", "single"),
                       data=parent.info.get("data", {}), model_source=f"run:{parent.id}",
                       model=f"run:{parent.id}",
                       parent=parent.id, runtime=cfg.compress.runtime)
    return run, cfg


def scored_splits(cfg: C.ExperimentConfig, tokenizer):
    """The run's data (validation and test as the parent saw them) and those two splits encoded."""
    data, _ = load_data(cfg.data)
    ec = cfg.encode
    return data, {s: encode_split(tokenizer, getattr(data, s), ec.max_length, ec.truncation, ec.long, ec.stride,
                                  ec.pool) for s in ("validation", "test")}


def logits_of(predictor: Predictor, enc: Encoded | Windows, batch_size: int, pad_id: int) -> np.ndarray:
    """(N, K) logits; for `Windows` (encode.long = "chunks") every window, pooled per document."""
    docs = enc if isinstance(enc, Windows) else None
    enc = docs.win if docs else enc
    out = np.empty((len(enc), predictor.num_labels), dtype=np.float32)
    for idx in eval_batches(enc.lengths, batch_size):
        batch = collate(enc, idx, pad_id)
        batch.pop("labels")
        out[idx] = predictor.logits(batch)
    return docs.pool_logits(out) if docs else out


def finish(run: Run, cfg: C.ExperimentConfig, runtime: str, threads: int = 0) -> dict:
    """Score the run's model (served by `runtime`) on validation and test; store events,
    predictions and the test score, mark it completed. Returns {split: scores} with the logits."""
    from encoderlab.train.loop import write_predictions
    pred = Predictor(run.dir / "model", runtime, threads)
    data, enc = scored_splits(cfg, pred.tokenizer)
    names = data.label_names
    pad_id = pred.tokenizer.pad_token_id or 0
    results = {}
    (run.dir / "predictions").mkdir(exist_ok=True)
    task = T.Task.from_meta(pred.meta)     # the parent's task: thresholds / target scale come with the model
    for split, e in enc.items():
        logits = logits_of(pred, e, cfg.train.eval_batch_size, pad_id)
        labels = getattr(data, split).labels
        loss = float(task.loss(torch.from_numpy(logits), torch.from_numpy(task.train_labels(labels)), smooth=False))
        scores = task.scores(logits, labels, loss)
        metrics, detail = task.event(scores)
        run.log({"split": "final_validation" if split == "validation" else "test", "step": 0, "epoch": 0,
                 "metrics": metrics, "detail": {**detail, "runtime": runtime}})
        write_predictions(run.dir / "predictions" / f"{split}.csv", getattr(data, split), logits, names, task)
        results[split] = {**scores, "logits": logits}
    metric = T.DEFAULT_METRIC[task.kind]
    test = results["test"]
    run.update(status="completed", finished=now(), test_accuracy=test.get("accuracy", test.get("subset_accuracy")),
               test_macro_f1=test.get("macro_f1"), test_scores=task.event(test)[0], parameters=pred.parameters,
               best_metric=metric, best_value=results["validation"][metric], message="")
    return results


def _parent_model(parent: Run, verb: str) -> Path:
    kinds.require(parent, verb)     # refused before a derived run is created
    return parent.dir / "model"


def truncate_run(store: RunStore, parent: Run, layers: str, name: str = "") -> tuple[Run, dict]:
    """A new run holding `layers` of the parent's encoder (its weights) and its head, unchanged."""
    model, tok, meta = classifier.load(_parent_model(parent, "truncate"))
    keep = parse_layers(layers, model.encoder.config.num_hidden_layers)
    run, cfg = new_run(store, parent, name or f"{parent.info['name']}-L{len(keep)}", layers=layers)
    with store.running(run, restarts="derived runs are made again, not resumed"):
        truncate(model, keep)
        classifier.save(model, tok, run.dir / "model", {**_meta(meta), "layers_from_teacher": keep})
        return run, finish(run, cfg, "torch")


def _meta(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "pooling"}


def copy_model(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and p.name not in ONNX_FILES.values():
            shutil.copy2(p, dst / p.name)


def quantize_run(store: RunStore, parent: Run, name: str = "", runtime: str = "torch-int8") -> tuple[Run, dict]:
    """A new run served as PyTorch dynamic int8 (Linear layers): torchao (`torch-int8`) or the
    deprecated torch.ao quantize_dynamic (`torch-int8-legacy`); the fp32 weights are kept and
    quantized at load, which is deterministic."""
    if runtime not in QUANTIZERS:
        raise ConfigError(f"quantize: runtime '{runtime}' is not one of {', '.join(QUANTIZERS)}")
    src = _parent_model(parent, "quantize")
    run, cfg = new_run(store, parent, name or f"{parent.info['name']}-{runtime.removeprefix('torch-')}",
                       teacher=parent.config().compress.teacher or parent.id,
                       layers=parent.config().compress.layers, runtime=runtime)
    with store.running(run, restarts="derived runs are made again, not resumed"):
        copy_model(src, run.dir / "model")
        results = finish(run, cfg, runtime)
        run.update(quantizer=quantizer_of(runtime))
        return run, results


def export_run(store: RunStore, parent: Run, int8: bool = False, name: str = "",
               opset: int | None = None) -> tuple[Run, dict]:
    """A new run with model.onnx (and model.int8.onnx), served by onnxruntime, plus the equivalence
    check against the parent's PyTorch fp32 model on the test split (export.json)."""
    src = _parent_model(parent, "export")
    runtime = "onnx-int8" if int8 else "onnx"
    pcfg = parent.config()
    run, cfg = new_run(store, parent, name or f"{parent.info['name']}-{runtime}",
                       teacher=pcfg.compress.teacher or parent.id, layers=pcfg.compress.layers, runtime=runtime)
    with store.running(run, restarts="derived runs are made again, not resumed"):
        dst = run.dir / "model"
        copy_model(src, dst)
        model, tok, meta = classifier.load(dst)
        written = export_onnx(model, dst / ONNX_FILES["onnx"], pairs=parent.info.get("task") == "pair", opset=opset)
        if int8:
            quantize_onnx(dst / ONNX_FILES["onnx"], dst / ONNX_FILES["onnx-int8"])
        results = finish(run, cfg, runtime)
        # the export itself is checked in fp32 (ONNX Runtime vs PyTorch, same weights); int8 changes
        # the numbers on purpose, so its agreement is reported beside, not as the check
        reference = Predictor(src, "torch")
        fp32 = results["test"]["logits"] if runtime == "onnx" else \
            logits_of(Predictor(dst, "onnx"), scored_splits(cfg, reference.tokenizer)[1]["test"],
                      cfg.train.eval_batch_size, reference.tokenizer.pad_token_id or 0)
        check = equivalence(reference, fp32, cfg)
        if int8:
            check["int8_vs_pytorch"] = equivalence(reference, results["test"]["logits"], cfg)
        check.update(opset=written, runtime=runtime, files={r: (dst / f).stat().st_size
                                                            for r, f in ONNX_FILES.items() if (dst / f).exists()})
        atomic.write_text(run.dir / "export.json", json.dumps(check, indent=2))
        run.update(export=check)
        return run, {**results, "equivalence": check}


def equivalence(reference: Predictor, logits: np.ndarray, cfg: C.ExperimentConfig) -> dict:
    """Max |logit difference| and predicted-label agreement of `logits` vs PyTorch fp32 on test."""
    _, enc = scored_splits(cfg, reference.tokenizer)
    ref = logits_of(reference, enc["test"], cfg.train.eval_batch_size, reference.tokenizer.pad_token_id or 0)
    return {"split": "test", "examples": len(ref), "max_abs_logit_diff": float(np.abs(ref - logits).max()),
            "label_agreement": float((ref.argmax(1) == logits.argmax(1)).mean())}
