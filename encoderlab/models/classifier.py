"""Encoder + pooling + head + loss: one module turning a batch into {"loss", "logits"}.

The head has one unit per class (classification), per label (multilabel) or one (regression);
the loss is the task's (`tasks.Task.loss`, cross-entropy when none is given)."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from encoderlab.config import HeadConfig, ModelConfig
from encoderlab.errors import ConfigError
from encoderlab.models import registry

# transformers imports torchao when it is installed (the `int8` extra); torchao's import then warns
# about its CUDA-only kernel libraries and a torch.compile registration notice: not news on a CPU
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)


class Head(nn.Module):
    """dropout -> linear, or dropout -> linear -> GELU -> dropout -> linear."""

    def __init__(self, dim: int, num_labels: int, cfg: HeadConfig):
        super().__init__()
        if cfg.type == "mlp":
            self.net = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(dim, cfg.hidden), nn.GELU(),
                                     nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, num_labels))
        else:
            self.net = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(dim, num_labels))

    def forward(self, x):
        return self.net(x)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, H) -> (B, H): first token, or the mean over real (non-pad) tokens."""
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int, head: HeadConfig, pooling: str,
                 class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0, loss_fn=None):
        super().__init__()
        self.loss_fn = loss_fn       # (logits, labels) -> loss of the run's task (tasks.Task.loss); None = CE
        self.encoder = encoder
        self.pooling = pooling
        self.head = Head(encoder.config.hidden_size, num_labels, head)
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.label_smoothing = label_smoothing
        # inspect.signature sees through transformers' forward decorators (co_varnames does not)
        self.uses_token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters \
            and getattr(encoder.config, "type_vocab_size", 0) > 1
        self.frontend: nn.Linear | None = None   # task "sequence", scheme patch: patch -> hidden

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, patches=None,
                patch_mask=None):
        kw = {"token_type_ids": token_type_ids} if self.uses_token_types and token_type_ids is not None else {}
        if patches is not None:
            # (B, T, H): [CLS]/[SEP]/padding keep their token embeddings, patch slots get projections;
            # the encoder adds position (and segment) embeddings and its LayerNorm on top
            emb = self.encoder.get_input_embeddings()(input_ids)
            proj = self.frontend(patches).to(emb.dtype)
            kw["inputs_embeds"] = torch.where(patch_mask.unsqueeze(-1), proj, emb)
            input_ids = None
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        logits = self.head(pool(hidden, attention_mask, self.pooling)).float()   # (B, num_labels)
        out = {"logits": logits}
        if labels is not None and self.loss_fn is not None:
            out["loss"] = self.loss_fn(logits, labels)
        elif labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels, weight=self.class_weights,
                                                      label_smoothing=self.label_smoothing)
        return out


def _apply_overrides(config, cfg: ModelConfig) -> None:
    """Size overrides go through the config's attribute_map (DistilBERT calls layers n_layers)."""
    if cfg.num_layers:
        config.num_hidden_layers = cfg.num_layers
        _resize_layer_types(config, cfg.num_layers, cfg.path)
    if cfg.init == "random":
        if cfg.hidden_size:
            config.hidden_size = cfg.hidden_size
            if hasattr(config, "embedding_size") and config.model_type == "albert":
                config.embedding_size = min(config.embedding_size, cfg.hidden_size)
        if cfg.num_heads:
            config.num_attention_heads = cfg.num_heads
        if cfg.intermediate_size:
            config.intermediate_size = cfg.intermediate_size
    elif cfg.hidden_size or cfg.num_heads or cfg.intermediate_size:
        raise ConfigError("model.hidden_size / num_heads / intermediate_size change the architecture; "
                          "they need model.init = \"random\" (pretrained weights would not fit)")
    if cfg.dropout >= 0:
        for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                     "embedding_dropout", "mlp_dropout"):
            if hasattr(config, attr):
                setattr(config, attr, cfg.dropout)
    if config.hidden_size % config.num_attention_heads:
        raise ConfigError(f"model: hidden size {config.hidden_size} is not divisible by "
                          f"{config.num_attention_heads} attention heads")


def _resize_layer_types(config, n: int, path: str) -> None:
    """A per-layer attention list (ModernBERT's `layer_types`) follows `model.num_layers`: the
    first n entries (the layers kept from a pretrained folder), or, for a deeper random model, the
    list's own period continued (full attention every k-th layer)."""
    types = getattr(config, "layer_types", None)
    if types is None or len(types) == n:
        return
    if n < len(types):
        config.layer_types = list(types[:n])
        return
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    every = full[1] - full[0] if len(full) > 1 else len(types)
    periodic = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(n)]
    if full[:1] != [0] or periodic[:len(types)] != list(types):
        raise ConfigError(f"model.num_layers = {n}: {path} lists attention types for {len(types)} layers "
                          "in no regular pattern; use at most that many layers")
    config.layer_types = periodic


def check_length(config, max_length: int) -> None:
    """Refuse encode.max_length past the positions the encoder has (learned tables) or was
    configured for (rotary: the model would run, on positions it never saw)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not limit:
        return
    if config.model_type in ("roberta", "xlm-roberta", "camembert", "mpnet"):
        limit -= (config.pad_token_id or 0) + 1    # positions start after the pad id
    if max_length > limit:
        kind = "rotary positions configured up to" if config.model_type == "modernbert" else "position embeddings for"
        raise ConfigError(f"encode.max_length = {max_length}: the {config.model_type} encoder has {kind} "
                          f"{limit} tokens; set encode.max_length <= {limit}")


def default_pooling(folder: Path, config=None) -> str:
    """Sentence-embedding checkpoints (sentence-transformers layout) were trained with mean pooling;
    the ModernBERT family pools as its config.json says (`classifier_pooling`), else by the mean
    like the released checkpoints (with local attention, [CLS] does not see a long sequence in most
    layers); anything else pools [CLS]."""
    pooling_cfg = folder / "1_Pooling" / "config.json"
    if pooling_cfg.exists():
        p = json.loads(pooling_cfg.read_text())
        return "cls" if p.get("pooling_mode_cls_token") else "mean"
    if getattr(config, "model_type", None) == "modernbert":
        # transformers' own default is "cls": only a value the folder states counts
        stated = json.loads((folder / "config.json").read_text()).get("classifier_pooling")
        return stated if stated in ("cls", "mean") else "mean"
    return "cls"


def prepare(cfg: ModelConfig, store_root=None) -> tuple[Path, object, object]:
    """Model folder, its config with the overrides applied, and the tokenizer (the folder's own,
    or `cfg.tokenizer`, whose vocabulary size then replaces the model's)."""
    folder = registry.resolve(cfg.path, store_root)
    if registry.is_architecture(cfg.path):
        if cfg.init != "random":
            raise ConfigError(f"model.path = \"{cfg.path}\" is an architecture without weights; "
                              "set model.init = \"random\"")
        if not cfg.tokenizer:
            raise ConfigError(f"model.path = \"{cfg.path}\" has no tokenizer; set model.tokenizer to a "
                              "tokenizer folder (make one with `encoderlab tokenizer train`)")
    config = AutoConfig.from_pretrained(folder)
    _apply_overrides(config, cfg)
    if not cfg.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if cfg.init == "random":    # fresh embeddings: the ids the config names are the folder tokenizer's
            _special_ids_from(tokenizer, config)
        return folder, config, tokenizer
    tokenizer = AutoTokenizer.from_pretrained(registry.resolve_tokenizer(cfg.tokenizer, store_root))
    if cfg.init == "pretrained" and len(tokenizer) != config.vocab_size:
        raise ConfigError(f"model.tokenizer has {len(tokenizer)} tokens but the pretrained model "
                          f"{cfg.path} has {config.vocab_size}: its embeddings belong to its own "
                          "tokenizer; drop model.tokenizer or set model.init = \"random\"")
    config.vocab_size = len(tokenizer)
    _special_ids_from(tokenizer, config)
    return folder, config, tokenizer


def _special_ids_from(tokenizer, config) -> None:
    """Special ids the config declares (ALBERT: bos/eos; ModernBERT: pad/cls/sep, 50k+ in its own
    vocabulary, out of range of another) become the tokenizer's."""
    for attr, token_id in (("pad_token_id", tokenizer.pad_token_id), ("bos_token_id", tokenizer.cls_token_id),
                           ("eos_token_id", tokenizer.sep_token_id), ("cls_token_id", tokenizer.cls_token_id),
                           ("sep_token_id", tokenizer.sep_token_id)):
        if getattr(config, attr, None) is not None and token_id is not None:
            setattr(config, attr, token_id)


def build(cfg: ModelConfig, num_labels: int, *, class_weights=None, label_smoothing=0.0,
          store_root=None, loss_fn=None):
    """Encoder from `cfg.path` (pretrained or fresh), with a new head. Returns (model, tokenizer, folder)."""
    folder, config, tokenizer = prepare(cfg, store_root)
    encoder = load_encoder(folder, config, pretrained=cfg.init == "pretrained")
    if len(tokenizer) > encoder.get_input_embeddings().num_embeddings:
        encoder.resize_token_embeddings(len(tokenizer))
    pooling = cfg.head.pooling if cfg.head.pooling != "auto" else default_pooling(folder, config)
    model = Classifier(encoder, num_labels, cfg.head, pooling, class_weights, label_smoothing, loss_fn)
    return model, tokenizer, folder


def load_encoder(folder: Path, config, pretrained: bool) -> nn.Module:
    """The bare encoder (AutoModel) of a model folder: its weights, or random init from `config`."""
    # BERT-style poolers (dense+tanh on [CLS]) are unused: we pool and classify in our own head
    kw = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "xlm-roberta", "camembert") else {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # truncated layers / dropped pooler are expected, not news
    try:
        if pretrained:
            return AutoModel.from_pretrained(folder, config=config, **kw)
        return AutoModel.from_config(config, **kw)
    finally:
        hf_logging.set_verbosity(verbosity)


def save(model: Classifier, tokenizer, folder: Path, meta: dict) -> None:
    """Encoder + tokenizer in Hugging Face format (from_pretrained works), head and meta beside."""
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    labels = meta["labels"]
    model.encoder.config.id2label = dict(enumerate(labels))
    model.encoder.config.label2id = {n: i for i, n in enumerate(labels)}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()   # a one-shard "Writing model shards" bar is noise here
    try:
        model.encoder.save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(folder / "head.safetensors"))
    if model.frontend is not None:
        save_file({k: v.contiguous() for k, v in model.frontend.state_dict().items()},
                  str(folder / "frontend.safetensors"))
    (folder / "encoderlab.json").write_text(json.dumps({**meta, "pooling": model.pooling}, indent=2))


def load(folder: Path) -> tuple[Classifier, object, dict]:
    """A saved classifier (from `save`), ready for inference. Returns (model, tokenizer, meta)."""
    from safetensors.torch import load_file
    meta = json.loads((folder / "encoderlab.json").read_text())
    if "head" not in meta:      # a bare folder (bench FOLDER); runs are refused by kinds.require
        from encoderlab.errors import StoreError
        raise StoreError(f"{folder} holds no classification model (a ranking model has scorers, not a class "
                         "head); rank with `encoderlab rank FILE`")
    encoder = load_encoder(folder, AutoConfig.from_pretrained(folder), pretrained=True)
    head_cfg = HeadConfig(**meta["head"])
    model = Classifier(encoder, len(meta["labels"]), head_cfg, meta["pooling"])
    model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    if (folder / "frontend.safetensors").exists():
        weights = load_file(str(folder / "frontend.safetensors"))
        model.frontend = nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
        model.frontend.load_state_dict(weights)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder), meta
