"""Experiment config: frozen dataclasses, one per concern, loaded from TOML with dotted overrides.

Every field has a default and a one-line doc (``doc`` metadata) that feeds ``encoderlab config``
and the README's config reference. Unknown keys and wrong types raise ``ConfigError`` naming the
key as the user typed it and the closest valid key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoderlab import configlib
from encoderlab.configlib import flatten, is_config, opt, parse_override, set_dotted, sub, to_dict, type_name
from encoderlab.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    source: str = opt("builtin:wordnet-lexname",
                      "builtin:NAME or a path to the training file (csv, tsv, jsonl, parquet)")
    validation: str = opt("", "validation file; empty = split off `validation_fraction` of source")
    test: str = opt("", "test file; empty = split off `test_fraction` of source")
    format: str = opt("auto", "file format; auto = from the extension",
                      ("auto", "csv", "tsv", "jsonl", "parquet"))
    task: str = opt("auto", "single text, text pair, numeric sequence (time series / image, see [series]), "
                    "multilabel (a set of labels per example; single text or pair) or regression (a number "
                    "per example; single text or pair); auto = pair when `text_pair` is set",
                    ("auto", "single", "pair", "sequence", "multilabel", "regression"))
    text: str = opt("text", "column holding the (first) text")
    text_pair: str = opt("", "column holding the second text of a pair; empty for single text")
    label: str = opt("label", "column holding the class label")
    labels: tuple[str, ...] = opt((), "explicit label order; empty = sorted labels seen in train")
    label_sep: str = opt("|", "multilabel: separator of the labels in a string label column (a list column, "
                         "jsonl/parquet, needs none)", late=True)
    label_columns: tuple[str, ...] = opt((), "multilabel: one 0/1 column per label (their names are the "
                                         "labels) instead of one label column", late=True)
    validation_fraction: float = opt(0.1, "share of source held out for validation when no file")
    test_fraction: float = opt(0.1, "share of source held out for test when no file")
    split_seed: int = opt(0, "seed of the stratified split (independent of train.seed)")
    max_train: int = opt(0, "use at most this many training examples (stratified); 0 = all")
    folds: int = opt(0, "k-fold: validation = fold `fold` of the training data (stratified); 0 = off")
    fold: int = opt(0, "which fold (0 .. folds-1) is held out for validation when folds > 0")
    max_eval: int = opt(0, "use at most this many validation/test examples; 0 = all")
    layout: str = opt("auto", "sequence: how an array's axes read; auto = (N, T) one channel, float (N, C, T), "
                      "uint8 (N, H, W) or (N, H, W, C) images", ("auto", "channels-time", "time-channels", "image"),
                      late=True)
    image_shape: tuple[int, ...] = opt((), "sequence: (H, W) or (H, W, C) of images stored as flat arrays in "
                                       "a list column", late=True)
    id_column: str = opt("", "sequence, long csv/tsv/parquet: the column naming each example (one row per "
                         "time step)", late=True)
    time_column: str = opt("", "sequence, long form: rows of an example are sorted by this column", late=True)
    channels: tuple[str, ...] = opt((), "sequence, long form: value columns; empty = every numeric column "
                                    "except id, time and label", late=True)
    nan: str = opt("error", "sequence: a missing value is an error (naming file, row, field), or is filled "
                   "by linear interpolation within its channel, or with 0", ("error", "interpolate", "zero"),
                   late=True)


@dataclass(frozen=True)
class EncodeConfig:
    max_length: int = opt(128, "maximum tokens per example, special tokens included")
    truncation: str = opt("longest_first", "how a pair shares the length budget",
                          ("longest_first", "only_first", "only_second"))
    add_tokens: int = opt(0, "add the N most frequent [UNK] characters / words of the training data as new "
                          "tokens (embeddings from their pieces, else the mean); 0 = off", late=True)
    add_tokens_unit: str = opt("char", "what encode.add_tokens adds: unknown characters or whole unknown words",
                               ("char", "word"), late=True)
    long: str = opt("head", "single texts longer than max_length: keep the first tokens, the last, the first "
                    "quarter + last three quarters (head+tail), or score every window (chunks: one sampled "
                    "window per document per training epoch, all windows pooled in evaluation and predict)",
                    ("head", "tail", "head+tail", "chunks"), late=True)
    stride: int = opt(32, "chunks: tokens each window shares with the previous one (below max_length minus "
                      "the special tokens)", late=True)
    pool: str = opt("mean", "chunks: how the windows' logits become the document's (mean, or max per class)",
                    ("mean", "max"), late=True)

    def __post_init__(self):
        if self.long == "chunks" and self.stride >= self.max_length - 2:
            raise ConfigError(f"encode.stride = {self.stride} must be below encode.max_length - 2 = "
                              f"{self.max_length - 2} (the window's text tokens), or windows would not advance")


@dataclass(frozen=True)
class HeadConfig:
    type: str = opt("linear", "classification head on the pooled vector", ("linear", "mlp"))
    hidden: int = opt(512, "hidden units of the MLP head")
    dropout: float = opt(0.1, "dropout before each head layer")
    pooling: str = opt("auto", "how token vectors become one vector; auto = mean for sentence-embedding "
                       "models and the ModernBERT family (unless its config.json says classifier_pooling "
                       "= \"cls\"), cls otherwise", ("auto", "cls", "mean"))


@dataclass(frozen=True)
class ModelConfig:
    path: str = opt("builtin:minilm-l6", "builtin:NAME, run:ID, arch:bert / arch:albert / arch:modernbert (no weights) "
                    "or a local Hugging Face model directory")
    tokenizer: str = opt("", "tokenizer folder (e.g. from `encoderlab tokenizer train`) or run:ID; "
                         "empty = the model's own; when set, the vocabulary size follows it", late=True)
    init: str = opt("pretrained", "pretrained weights, or the same architecture from random init",
                    ("pretrained", "random"))
    num_layers: int = opt(0, "keep only the first N encoder layers (0 = all); a per-layer "
                         "attention list (ModernBERT's layer_types) follows")
    hidden_size: int = opt(0, "random init only: hidden size override (0 = keep)")
    num_heads: int = opt(0, "random init only: attention heads override (0 = keep)")
    intermediate_size: int = opt(0, "random init only: feed-forward size override (0 = keep)")
    dropout: float = opt(-1.0, "encoder hidden/attention dropout override (-1 = keep)")
    head: HeadConfig = sub(HeadConfig, "classification head")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = opt(3, "passes over the training data")
    max_steps: int = opt(0, "stop after this many optimizer steps (0 = no limit); for smoke runs")
    batch_size: int = opt(32, "examples per optimizer step (before accumulation)")
    eval_batch_size: int = opt(128, "examples per evaluation batch")
    grad_accum: int = opt(1, "micro-batches accumulated per optimizer step")
    lr: float = opt(5e-5, "peak learning rate of AdamW")
    weight_decay: float = opt(0.01, "AdamW decay (never applied to biases and LayerNorm)")
    layer_lr_decay: float = opt(1.0, "lr multiplier per layer below the top (1 = off)")
    head_lr: float = opt(0.0, "learning rate of the head (0 = same as lr)")
    warmup_ratio: float = opt(0.1, "share of steps spent warming up linearly")
    warmup_steps: int = opt(0, "warmup steps; overrides warmup_ratio when > 0")
    schedule: str = opt("linear", "decay after warmup", ("linear", "cosine", "constant"))
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 = off)")
    precision: str = opt("auto", "auto = bf16 autocast only where this machine runs it faster (measured once; "
                         "CUDA with bf16), else fp32; or force bf16 / fp32", ("auto", "bf16", "fp32"))
    seed: int = opt(0, "seed of init, dropout and batch order")
    device: str = opt("auto", "auto = cuda when present, else cpu", ("auto", "cpu", "cuda"))
    threads: int = opt(0, "torch CPU threads (0 = the cores available to the process: affinity, cgroup quota)")
    bucket: bool = opt(True, "group examples of similar length into batches (less padding); bi-encoder "
                            "ranking runs group their contexts too, cross-encoder runs keep random batches "
                            "(K pairs per context)")
    class_weights: str = opt("none", "cross-entropy class weights; multilabel: balanced = BCE pos_weight "
                             "(negatives / positives of each label in train, at most 10)", ("none", "balanced"))
    regression_loss: str = opt("mse", "regression: squared error, or Huber (delta 1 on the standardised "
                               "scale: less pull from outliers)", ("mse", "huber"), late=True)
    standardize_targets: bool = opt(True, "regression: train on (y - train mean) / train std; the mean and "
                                    "std are stored with the model and predictions are on the original scale",
                                    late=True)
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing")
    freeze_embeddings: bool = opt(False, "keep the embedding layer fixed")
    freeze_layers: int = opt(0, "keep the lowest N encoder layers fixed")
    eval_every_steps: int = opt(0, "also evaluate on validation every N steps (0 = per epoch)")
    save_every_steps: int = opt(0, "also checkpoint every N steps (0 = at each epoch end)")
    keep_checkpoints: int = opt(2, "checkpoints kept besides the best one while the run can still resume")
    keep_final_checkpoints: bool = opt(False, "keep the checkpoints' weights once the run completes (for `encoderlab "
                                       "eval --checkpoints`); otherwise a completed run keeps its final model, "
                                       "metrics and predictions only", late=True)
    keep_optimizer: bool = opt(False, "keep the checkpoints' optimizer/scheduler state once the run completes "
                               "(it only serves resuming; twice the model's size per checkpoint)", late=True)
    metric: str = opt("auto", "validation metric that picks the best checkpoint; auto = accuracy "
                      "(single / pair / sequence), micro_f1 (multilabel), spearman (regression)",
                      ("auto", "accuracy", "macro_f1", "micro_f1", "spearman", "loss"))
    early_stopping: int = opt(0, "stop after N evaluations without improvement (0 = off)")
    compile: str = opt("auto", "torch.compile the training forward/backward; auto = eager for now (on the "
                       "quickstart compiling cost ~150 s and steps ran no faster), on, off", ("auto", "on", "off"),
                       late=True)


@dataclass(frozen=True)
class PretrainConfig:
    """`encoderlab pretrain` only. The corpus is data.source: a .txt file (one sentence per line,
    a blank line ends a document) or a table whose data.text (+ data.text_pair) column is read;
    data.max_train / data.max_eval cap the examples, data.split_seed seeds the held-out split.
    [train] applies as in fine-tuning, except the classification-only keys (class_weights,
    label_smoothing, metric, early_stopping): the best checkpoint has the lowest held-out MLM loss."""
    objective: str = opt("mlm", "masked LM alone, or with next-sentence (nsp) / sentence-order (sop) "
                         "prediction on sentence pairs", ("mlm", "mlm+nsp", "mlm+sop"))
    mask_rate: float = opt(0.15, "share of tokens predicted: 80% become [MASK], 10% a random token, 10% stay")
    whole_word_masking: bool = opt(False, "mask all sub-tokens of a chosen word together")
    pair_swap: float = opt(0.0, "objective mlm: chance to present a pair as (B, A); augmentation")
    heldout_fraction: float = opt(0.05, "share of documents held out for MLM loss / masked-token accuracy")


@dataclass(frozen=True)
class RankingConfig:
    """`encoderlab rank` only: candidate ranking / entity linking. data.source holds contexts
    (jsonl: context or context_left + mention + context_right, candidates or gold, domain; or a long
    csv with one row per candidate); model.head.pooling / dropout apply to both modes."""
    mode: str = opt("cross", "cross-encoder (context+candidate in one sequence), bi-encoder (encoded "
                    "apart, in-batch negatives), or a baseline: random, first (first-listed candidate), "
                    "zero-shot (untrained model.path, mean-pooled cosine)",
                    ("cross", "bi", "random", "first", "zero-shot"))
    candidates: str = opt("auto", "rank the example's explicit candidate list, or link against the "
                          "dictionary (entries of the example's domain); auto = dictionary when one is "
                          "given", ("auto", "list", "dictionary"))
    dictionary: str = opt("", "dictionary file (id, title, description, domain); builtin:wordnet-linking "
                          "brings its own")
    group_column: str = opt("group", "long csv/tsv form: the column naming each candidate row's context")
    markers: bool = opt(True, "mark the mention with [M] ... [/M] tokens added to the vocabulary")
    context_tokens: int = opt(64, "token budget of the context segment ([CLS] ... [SEP] included)")
    candidate_tokens: int = opt(64, "token budget of the candidate segment (its [SEP] included)")
    context_truncation: str = opt("mention", "how an over-long context is cut: keep its head, tail, both "
                                  "ends, or a window centred on the mention", ("mention", "head", "tail",
                                                                               "head+tail"))
    candidate_truncation: str = opt("head", "how an over-long candidate is cut", ("head", "tail", "head+tail"))
    loss: str = opt("ce", "softmax cross-entropy over the candidates, or AM-softmax (additive margin on "
                    "bounded scores)", ("ce", "am-softmax"))
    margin: float = opt(0.2, "AM-softmax: margin subtracted from the gold candidate's bounded score")
    scale: float = opt(20.0, "scale of bounded scores (cosine, or tanh of the cross-encoder's score) "
                       "before the softmax")
    k_train: int = opt(8, "cross: candidates per training context (gold + k_train-1 sampled); 0 = all")
    top_k: int = opt(64, "retrieval depth: recall@k cut-off of the bi-encoder and the candidates the "
                     "cross-encoder reranks in dictionary mode")
    retriever: str = opt("zero-shot", "cross: the first stage, run:ID of a bi-encoder run or zero-shot "
                         "(untrained model.path): in dictionary mode its top_k are reranked; its scores pick "
                         "the hardest negatives and are fused with the reranker's (rerank_alpha)")
    negatives: str = opt("sampled", "cross: the k_train - 1 negatives of a training context: sampled at random "
                         "from its candidates, or the retriever's highest-scored wrong ones (mined once, before "
                         "training, saved in the run as first_stage.npz)", ("sampled", "hardest"), late=True)
    refresh_negatives: bool = opt(False, "cross with negatives = \"hardest\": from the second epoch on, "
                                  "mine them again with the reranker being trained (its own hardest mistakes) "
                                  "instead of the first stage's", late=True)
    rerank_alpha: float = opt(-1.0, "cross: final score = alpha * reranker + (1 - alpha) * retriever, each "
                              "standardised over the context's candidates; -1 = tuned on validation over 0, "
                              "0.05, .., 1 (so validation never falls below the retriever alone); 1 = reranker "
                              "alone")
    wise: float = opt(1.0, "cross / bi: WiSE-FT weight-space ensemble, encoder = (1 - wise) * starting weights "
                      "+ wise * fine-tuned; -1 = tuned on validation; 1 = fine-tuned alone", late=True)
    shared: bool = opt(True, "bi: one encoder for contexts and candidates (false = two copies)")
    score: str = opt("cosine", "bi: similarity of the two vectors", ("cosine", "dot"))
    hard_negatives: int = opt(0, "bi: extra negatives per context from its candidate list (other senses), "
                              "else random entries of its domain's dictionary")
    context_pooling: str = opt("model", "how the context (bi) or the pair (cross) becomes one vector: the "
                               "model's pooling (model.head.pooling), or the mean over the marked mention "
                               "[M] .. [/M] (needs markers; rows whose mention was cut fall back to the model's)",
                               ("model", "mention"), late=True)
    teacher: str = opt("", "bi: run:ID of a completed cross-encoder run whose scores of each training "
                       "context's candidates the bi-encoder also learns from (scored once before training, "
                       "cached in the run folder); empty = off", late=True)
    distill_loss: str = opt("kl", "bi with a teacher: KL(softmax(teacher/T) || softmax(student/T)) over the "
                            "context's scored candidates, or MSE of the gold-minus-negative score margins "
                            "(margin-mse, Hofstaetter et al.)", ("kl", "margin-mse"), late=True)
    distill_weight: float = opt(0.5, "bi with a teacher: loss = (1 - w) * in-batch cross-entropy + w * the "
                                "distillation loss", late=True)
    distill_temperature: float = opt(1.0, "bi with a teacher, kl: softmax temperature T of both score lists",
                                     late=True)
    freeze_candidates: bool = opt(False, "bi with shared = false: the candidate encoder is not trained; its "
                                  "encodings are computed once and reused across epochs", late=True)


# how a stored model can be served (cost/runtime.py): PyTorch eager fp32; int8 through torchao
# (torch-int8) or the deprecated torch.ao.quantization.quantize_dynamic (torch-int8-legacy); ONNX Runtime
RUNTIMES = ("torch", "torch-int8", "torch-int8-legacy", "onnx", "onnx-int8")


@dataclass(frozen=True)
class CompressConfig:
    """Runs derived from a fine-tuned teacher run (`encoderlab truncate / distill / quantize /
    export`). Distillation loss = soft_weight * T^2 * KL(teacher_T || student_T)
    + (1 - soft_weight) * CE(labels) + hidden_weight * MSE(hidden states)
    + attention_weight * MSE(attention maps), over the layer_map pairs."""
    teacher: str = opt("", "run the model derives from (id, prefix, name or 'last')", late=True)
    layers: str = opt("", "teacher layers kept: first:K, every:N (layers N-1, 2N-1, ...) or an explicit "
                      "list like 0,3,5 (0-based); empty = all", late=True)
    student: str = opt("teacher", "distill: start from the teacher's (kept) layers and weights, or a "
                       "fresh model built from [model] (e.g. narrower, model.init = \"random\")",
                       ("teacher", "model"), late=True)
    runtime: str = opt("torch", "how the run's model is served by default", RUNTIMES, late=True)
    temperature: float = opt(2.0, "distill: softmax temperature of the soft-label KL", late=True)
    soft_weight: float = opt(0.5, "distill: weight of the soft-label KL (1 - it weighs hard-label CE)",
                             late=True)
    hidden_weight: float = opt(0.0, "distill: weight of hidden-state MSE (0 = off)", late=True)
    attention_weight: float = opt(0.0, "distill: weight of attention-map MSE (0 = off; needs equal head "
                                  "counts)", late=True)
    layer_map: tuple[int, ...] = opt((), "distill: teacher layer (1-based output) matched by each student "
                                     "layer; empty = uniform: student i of S <- teacher round((i+1)*L/S)",
                                     late=True)


@dataclass(frozen=True)
class SeriesConfig:
    """data.task = "sequence": how numeric series and images become the encoder's input. The scheme
    state (channel statistics, bin edges, grid ranges) is fitted on the training split only and
    stored with the run's model, so `encoderlab predict` encodes new raw series the same way."""
    scheme: str = opt("bins", "bins: each value -> one of `bins` tokens per channel (new tokens "
                      "appended to the vocabulary); grid: 2-D/3-D positions -> cell-ID tokens; sax: "
                      "piecewise means -> letters; patch: patches projected into the hidden size "
                      "(no vocabulary)", ("bins", "grid", "sax", "patch"))
    select: int = opt(0, "keep only the first k channels (0 = all)")
    normalize: str = opt("channel", "z-score per channel with train statistics, per example and "
                         "channel, or none", ("channel", "example", "none"))
    pool: int = opt(1, "average every `pool` time steps (images: pool x pool pixels) before encoding; "
                    "shortens token sequences")
    bins: int = opt(16, "bins: quantisation levels per channel")
    binning: str = opt("quantile", "bins: equal-width bins over the train range, or train quantiles "
                       "(equal counts)", ("uniform", "quantile"))
    cells: int = opt(16, "grid: cells per axis (the vocabulary grows as cells^axes)")
    axes: int = opt(2, "grid: how many leading channels are coordinates (2 or 3)")
    alphabet: int = opt(8, "sax: letters (Gaussian breakpoints of the z-normalised series)")
    segment: int = opt(4, "sax: time steps averaged into one letter (PAA window)")
    patch: int = opt(8, "patch: time steps per patch (images: patch x patch pixels)")
    vocabulary: str = opt("extend", "extend: the model's text vocabulary plus the scheme's tokens (needed "
                          "for pretrained weights); own: only [PAD] [UNK] [CLS] [SEP] [MASK] + the scheme's "
                          "tokens (model.init = \"random\"; drops ~30k unused text embeddings)", ("extend", "own"),
                          late=True)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = opt("experiment", "name of the run(s); shown by `encoderlab runs`")
    group: str = opt("", "group the run belongs to (sweeps set it)")
    tracking: tuple[str, ...] = opt((), "also log params, per-epoch metrics and the final model to these "
                                    "trackers (the run store stays the truth)", ("mlflow", "tensorboard"),
                                    late=True)
    tracking_uri: str = opt("", "MLflow tracking URI; empty = sqlite:///<store>/mlflow.db (artifacts in "
                            "<store>/mlartifacts)", late=True)
    data: DataConfig = sub(DataConfig, "where the examples come from")
    encode: EncodeConfig = sub(EncodeConfig, "how examples become tokens")
    model: ModelConfig = sub(ModelConfig, "encoder, init and head")
    train: TrainConfig = sub(TrainConfig, "the fit loop")
    pretrain: PretrainConfig = sub(PretrainConfig, "`encoderlab pretrain`: masking and sentence-pair objective",
                                   late=True)
    series: SeriesConfig = sub(SeriesConfig, "data.task = \"sequence\": numeric series / images -> encoder input",
                               late=True)
    ranking: RankingConfig = sub(RankingConfig, "`encoderlab rank`: candidate ranking and entity linking",
                                 late=True)
    compress: CompressConfig = sub(CompressConfig, "truncate / distill / quantize / export: runs derived "
                                   "from a teacher run", late=True)


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with validation


# value ranges, checked after the types, as intervals: "[" / "]" include the bound, "(" / ")" do not.
# Every number must also be finite. Out of range is a ConfigError before any work starts.
_GE0, _GE1, _POS, _UNIT, _PROB = "[0, inf)", "[1, inf)", "(0, inf)", "[0, 1]", "[0, 1)"
RANGES: dict[str, str] = {
    "data.validation_fraction": _PROB, "data.test_fraction": _PROB, "data.max_train": _GE0, "data.folds": _GE0,
    "data.fold": _GE0, "data.max_eval": _GE0, "encode.max_length": "[8, inf)", "encode.add_tokens": _GE0,
    "encode.stride": _GE0, "model.num_layers": _GE0,
    "model.hidden_size": _GE0, "model.num_heads": _GE0, "model.intermediate_size": _GE0,
    "model.dropout": "[-1, 1)", "model.head.hidden": _GE1, "model.head.dropout": _PROB, "train.epochs": _GE1,
    "train.max_steps": _GE0, "train.batch_size": _GE1, "train.eval_batch_size": _GE1, "train.grad_accum": _GE1,
    "train.lr": _POS, "train.weight_decay": _GE0, "train.layer_lr_decay": "(0, 1]", "train.head_lr": _GE0,
    "train.warmup_ratio": _UNIT, "train.warmup_steps": _GE0, "train.max_grad_norm": _GE0, "train.seed": _GE0,
    "train.threads": _GE0, "train.label_smoothing": _PROB, "train.freeze_layers": _GE0,
    "train.eval_every_steps": _GE0, "train.save_every_steps": _GE0, "train.keep_checkpoints": _GE1,
    "train.early_stopping": _GE0, "pretrain.mask_rate": "(0, 1]", "pretrain.pair_swap": _UNIT,
    "pretrain.heldout_fraction": _PROB, "series.select": _GE0, "series.pool": _GE1, "series.bins": "[2, inf)",
    "series.cells": _GE1, "series.axes": _GE1, "series.alphabet": "[2, inf)", "series.segment": _GE1,
    "series.patch": _GE1, "ranking.context_tokens": "[4, inf)", "ranking.candidate_tokens": "[2, inf)",
    "ranking.margin": _GE0, "ranking.scale": _POS, "ranking.k_train": _GE0, "ranking.top_k": _GE1,
    "ranking.hard_negatives": _GE0, "ranking.rerank_alpha": "[-1, 1]", "ranking.wise": "[-1, 1]",
    "ranking.distill_weight": _UNIT, "ranking.distill_temperature": _POS,
    "compress.temperature": _POS, "compress.soft_weight": _UNIT,
    "compress.hidden_weight": _GE0, "compress.attention_weight": _GE0,
}


def from_dict(cls, raw: dict, prefix: str = ""):
    """Build a (nested) config dataclass from a plain dict, validating every key and its range."""
    return configlib.from_dict(cls, raw, prefix, RANGES)


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"experiment file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load(path: str | Path | None = None, overrides: typing.Iterable[str] = (),
         base: dict | None = None) -> ExperimentConfig:
    """Load an experiment file (or start from defaults), apply dotted overrides, validate.

    Relative data paths are resolved against the experiment file's folder so a config works from
    any working directory.
    """
    raw = copy.deepcopy(base or {})  # overrides must not change the caller's nested tables
    if path is not None:
        raw = load_raw(path)
        raw.pop("sweep", None)   # the sweep table is read by encoderlab.sweep, not part of a run
        _resolve_paths(raw, Path(path).resolve().parent)
    for o in overrides:
        set_dotted(raw, *parse_override(o))
    where = f"{path}: " if path else ""
    try:
        return from_dict(ExperimentConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None


def _resolve_paths(raw: dict, folder: Path) -> None:
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("source", "validation", "test"):
            v = data.get(key)
            if isinstance(v, str) and v and ":" not in v.split("/")[0] and not Path(v).is_absolute():
                data[key] = str((folder / v).resolve())
    ranking = raw.get("ranking")
    if isinstance(ranking, dict):
        v = ranking.get("dictionary")
        if isinstance(v, str) and v and ":" not in v.split("/")[0] and not Path(v).is_absolute():
            ranking["dictionary"] = str((folder / v).resolve())
    model = raw.get("model")
    if isinstance(model, dict):
        v = model.get("path")
        if isinstance(v, str) and (v.startswith(".") or "/" in v) and ":" not in v and not Path(v).is_absolute():
            model["path"] = str((folder / v).resolve())
        v = model.get("tokenizer")
        if isinstance(v, str) and v and ":" not in v.split("/")[0] and not Path(v).is_absolute():
            model["tokenizer"] = str((folder / v).resolve())


def diff(cfg, base) -> dict[str, Any]:
    """Dotted keys whose value in `cfg` differs from `base` (e.g. the defaults)."""
    a, b = flatten(to_dict(cfg)), flatten(to_dict(base))
    return {k: v for k, v in a.items() if b.get(k) != v}


def _drop_late_defaults(cfg, d: dict) -> None:
    """Remove `late` fields (and tables) that are at their default from `d`, in place."""
    default = type(cfg)()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("late") and value == getattr(default, f.name):
            d.pop(f.name)
        elif dataclasses.is_dataclass(value):
            _drop_late_defaults(value, d[f.name])


def config_hash(cfg: ExperimentConfig) -> str:
    """Hash of everything that changes the result (not the name, group or tracking). Fields added later
    count only when set, so the hash of a config that does not use them never changes."""
    d = to_dict(cfg)
    d.pop("name"), d.pop("group")
    _drop_late_defaults(cfg, d)
    d.pop("tracking", None), d.pop("tracking_uri", None)   # where results are mirrored changes none
    # precision "auto" (the default since it replaced "bf16") hashes as the old default: stored runs
    # keep matching their sweep points, and auto only picks the faster of two equivalent precisions
    if d["train"]["precision"] == "auto":
        d["train"]["precision"] = "bf16"
    # metric "auto" (the default since multilabel / regression) hashes as the old default where it
    # means it: stored classification runs keep matching their sweep points
    if d["train"]["metric"] == "auto" and d["data"]["task"] not in ("multilabel", "regression"):
        d["train"]["metric"] = "accuracy"
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def to_toml(cfg: ExperimentConfig) -> str:
    """Resolved config as TOML (scalars first, then tables), readable by `load`."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            # JSON escapes a character beyond U+FFFF as a surrogate pair, which TOML refuses
            return re.sub(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})",
                          lambda m: "\\U%08X" % (0x10000 + ((int(m[1], 16) - 0xD800) << 10)
                                                  + int(m[2], 16) - 0xDC00), json.dumps(v))
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    lines: list[str] = []

    def emit(d: dict, prefix: str):
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix:
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{k} = {fmt(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            emit(v, f"{prefix}.{k}" if prefix else k)

    emit(to_dict(cfg), "")
    return "\n".join(lines).lstrip() + "\n"


def reference(cls=ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every leaf field: the config reference."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if is_config(tp):
            rows.extend(reference(tp, f"{prefix}{f.name}."))
            continue
        doc = f.metadata.get("doc", "")
        if f.metadata.get("choices"):
            doc += f" [{' | '.join(map(str, f.metadata['choices']))}]"
        default = f.default
        shown = json.dumps(list(default) if isinstance(default, tuple) else default)
        rows.append((f"{prefix}{f.name}", type_name(tp), shown, doc))
    return rows


def replace(cfg, **dotted: Any):
    """Copy of a config with dotted keys changed, validated like the TOML file would be."""
    raw = to_dict(cfg)
    for k, v in dotted.items():
        set_dotted(raw, k.replace("__", "."), v)
    return from_dict(type(cfg), raw)

