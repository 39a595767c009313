"""Ranking models: a cross-encoder (one score per (context, candidate) pair) and a bi-encoder
(context and candidate vectors, dot or cosine), each turning a batch into {"loss", "logits"}
with logits (B, K) over the candidates; softmax cross-entropy or AM-softmax over them."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

import torch
from torch import nn

from encoderlab.config import ModelConfig, RankingConfig
from encoderlab.encode.budget import MARKERS, add_markers
from encoderlab.errors import ConfigError
from encoderlab.models import classifier
from encoderlab.models.classifier import Head, pool

NEG = -1e4   # masked-out candidates: far below any score, finite so bf16/fp16 stay NaN-free


def rank_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None, loss: str,
              margin: float, scale: float) -> torch.Tensor:
    """Softmax cross-entropy over the candidates (B, K); AM-softmax subtracts scale * margin from the
    gold logit first (logits are scale * a bounded score, so the gold must win by the margin)."""
    if loss == "am-softmax":
        onehot = nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
        logits = logits - scale * margin * onehot
    if mask is not None:
        logits = logits.masked_fill(~mask, NEG)
    return nn.functional.cross_entropy(logits, labels)


def mention_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, markers: tuple[int, int]) -> torch.Tensor:
    """(N, T) mask of the tokens from [M] to [/M] (both included) of each row; a row without an
    opening marker (cut by the budget) keeps its attention mask, so pooling falls back to all tokens."""
    opened = (input_ids == markers[0]).cumsum(-1)
    closed = (input_ids == markers[1]).cumsum(-1)
    inside = (opened > closed) | ((input_ids == markers[1]) & (opened > 0))
    inside = inside & attention_mask.bool()
    found = inside.any(-1, keepdim=True)
    return torch.where(found, inside, attention_mask.bool()).to(attention_mask.dtype)


def _uses_types(encoder) -> bool:
    return "token_type_ids" in inspect.signature(encoder.forward).parameters \
        and getattr(encoder.config, "type_vocab_size", 0) > 1


class CrossEncoder(nn.Module):
    """[CLS] context [SEP] candidate [SEP] -> encoder -> pool -> 1-unit head: one score per pair.
    The N = sum(K_b) pairs of a batch are scored flat, then scattered into (B, K) by `cand_mask`."""

    def __init__(self, encoder: nn.Module, head, pooling: str, rc: RankingConfig,
                 markers: tuple[int, int] | None = None):
        super().__init__()
        self.encoder, self.pooling, self.rc, self.markers = encoder, pooling, rc, markers
        self.head = Head(encoder.config.hidden_size, 1, head)
        self.uses_token_types = _uses_types(encoder)

    def forward(self, input_ids, attention_mask, cand_mask, token_type_ids=None, labels=None):
        kw = {"token_type_ids": token_type_ids} if self.uses_token_types and token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        if self.markers:    # the mention's tokens, having attended to the candidate
            pooled = pool(hidden, mention_mask(input_ids, attention_mask, self.markers), "mean")
        else:
            pooled = pool(hidden, attention_mask, self.pooling)
        flat = self.head(pooled).float().squeeze(-1)                                          # (N,)
        if self.rc.loss == "am-softmax":
            flat = self.rc.scale * torch.tanh(flat)   # bounded, so a margin means something
        logits = torch.full(cand_mask.shape, NEG, dtype=flat.dtype, device=flat.device)
        logits = logits.masked_scatter(cand_mask, flat)                                      # (B, K)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = rank_loss(logits, labels, cand_mask, self.rc.loss, self.rc.margin, self.rc.scale)
        return out


class BiEncoder(nn.Module):
    """Contexts and candidates encoded apart (one shared encoder or two), pooled to vectors;
    score = dot product or scale * cosine. Trained with in-batch negatives: every candidate of the
    batch is a negative for every other context."""

    def __init__(self, encoder: nn.Module, pooling: str, rc: RankingConfig,
                 markers: tuple[int, int] | None = None):
        super().__init__()
        self.encoder = encoder
        self.cand_encoder = encoder if rc.shared else copy.deepcopy(encoder)
        self.pooling, self.rc, self.markers = pooling, rc, markers

    def _embed(self, encoder, input_ids, attention_mask, pool_mask=None) -> torch.Tensor:
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if pool_mask is None:
            v = pool(hidden, attention_mask, self.pooling).float()                           # (N, H)
        else:
            v = pool(hidden, pool_mask, "mean").float()
        return nn.functional.normalize(v, dim=-1) if self.rc.score == "cosine" else v

    def embed_contexts(self, input_ids, attention_mask) -> torch.Tensor:
        if self.markers:    # the mention's tokens in their context (the word, not the sentence)
            return self._embed(self.encoder, input_ids, attention_mask,
                               mention_mask(input_ids, attention_mask, self.markers))
        return self._embed(self.encoder, input_ids, attention_mask)

    def embed_candidates(self, input_ids, attention_mask) -> torch.Tensor:
        return self._embed(self.cand_encoder, input_ids, attention_mask)

    def scores(self, ctx: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        s = ctx @ cand.T                                                                      # (B, N)
        return self.rc.scale * s if self.rc.score == "cosine" else s

    def forward(self, ctx, cand, labels=None, cand_mask=None):
        """ctx / cand: tokenized batches; labels (B,) index each context's gold among the N
        candidates; cand_mask (B, N) False where a candidate must not count (a duplicate of the gold)."""
        logits = self.scores(self.embed_contexts(**ctx), self.embed_candidates(**cand))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = rank_loss(logits, labels, cand_mask, self.rc.loss, self.rc.margin, self.rc.scale)
        return out


def build(mc: ModelConfig, rc: RankingConfig, store_root=None, markers: bool | None = None):
    """(model, tokenizer, folder) for `rc.mode` cross / bi / zero-shot (an untrained bi-encoder)."""
    folder, config, tokenizer = classifier.prepare(mc, store_root)
    encoder = classifier.load_encoder(folder, config, pretrained=mc.init == "pretrained")
    if rc.markers if markers is None else markers:
        add_markers(tokenizer, encoder)
    pooling = mc.head.pooling if mc.head.pooling != "auto" else classifier.default_pooling(folder, config)
    ids = _marker_ids(tokenizer, rc) if rc.mode in ("cross", "bi") else None
    if rc.mode == "cross":
        return CrossEncoder(encoder, mc.head, pooling, rc, ids), tokenizer, folder
    return BiEncoder(encoder, pooling, rc, ids), tokenizer, folder


def _marker_ids(tokenizer, rc: RankingConfig) -> tuple[int, int] | None:
    """The [M] / [/M] ids when the context is pooled over its mention, else None."""
    if rc.context_pooling != "mention":
        return None
    if not rc.markers:
        raise ConfigError("ranking.context_pooling = \"mention\" needs ranking.markers = true "
                          "(the mention is found by its markers)")
    return tuple(tokenizer.convert_tokens_to_ids(list(MARKERS)))


def save(model: nn.Module, tokenizer, folder: Path, meta: dict) -> None:
    """Encoder(s) + tokenizer in Hugging Face format, the cross-encoder's head and meta beside."""
    from safetensors.torch import save_file
    from transformers.utils import logging as hf_logging
    folder.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    if isinstance(model, CrossEncoder):
        model.encoder.save_pretrained(folder)
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(folder / "head.safetensors"))
    else:
        model.encoder.save_pretrained(folder)
        if model.cand_encoder is not model.encoder:
            model.cand_encoder.save_pretrained(folder / "candidate_encoder")
    tokenizer.save_pretrained(folder)
    (folder / "encoderlab.json").write_text(json.dumps({**meta, "pooling": model.pooling}, indent=2))


def load_crossencoder(folder: Path, rc: RankingConfig, head) -> tuple[CrossEncoder, object]:
    """A saved cross-encoder (from `save`): encoder, its 1-unit head (`head`: the run's
    model.head config) and tokenizer, in eval mode."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer
    meta = json.loads((folder / "encoderlab.json").read_text())
    if meta.get("mode") != "cross":
        raise ValueError(f"{folder} holds a {meta.get('mode')} model, not a cross-encoder")
    enc = classifier.load_encoder(folder, AutoConfig.from_pretrained(folder), pretrained=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = CrossEncoder(enc, head, meta["pooling"], rc, _marker_ids(tokenizer, rc))
    model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    model.eval()
    return model, tokenizer


def load_biencoder(folder: Path, rc: RankingConfig) -> tuple[BiEncoder, object]:
    """A saved bi-encoder (from `save`) ready for retrieval: (model, tokenizer)."""
    from transformers import AutoConfig, AutoTokenizer
    meta = json.loads((folder / "encoderlab.json").read_text())
    if meta.get("mode") != "bi":
        raise ValueError(f"{folder} holds a {meta.get('mode')} model, not a bi-encoder")
    enc = classifier.load_encoder(folder, AutoConfig.from_pretrained(folder), pretrained=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BiEncoder(enc, meta["pooling"], rc, _marker_ids(tokenizer, rc))
    if (folder / "candidate_encoder").exists():
        sub = folder / "candidate_encoder"
        model.cand_encoder = classifier.load_encoder(sub, AutoConfig.from_pretrained(sub), pretrained=True)
    model.eval()
    return model, tokenizer
