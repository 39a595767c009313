"""Layer selection and truncation of an encoder: which teacher layers a smaller model keeps
(`compress.layers`), and the model cut down to them with their weights. Used by `truncate` and by
distillation's student initialisation."""

from __future__ import annotations

import torch

from encoderlab.errors import ConfigError
from encoderlab.models import classifier


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """'first:K' -> 0..K-1; 'every:N' -> N-1, 2N-1, ... (ends on the top layer when N divides L);
    '0,3,5' -> those (0-based, ascending, distinct); '' -> all."""
    where = f"compress.layers = \"{spec}\""
    spec = spec.strip()
    if not spec:
        return list(range(num_layers))
    try:
        if spec.startswith("first:"):
            k = int(spec[6:])
            layers = list(range(k))
        elif spec.startswith("every:"):
            n = int(spec[6:])
            if n < 1:
                raise ValueError
            layers = list(range(n - 1, num_layers, n))
        else:
            layers = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ConfigError(f"{where}: expected first:K, every:N or a list like 0,3,5") from None
    if not layers:
        raise ConfigError(f"{where} keeps no layer of the teacher's {num_layers}")
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(f"{where}: layer(s) {bad} outside 0 .. {num_layers - 1} (the teacher has {num_layers})")
    if layers != sorted(set(layers)):
        raise ConfigError(f"{where}: layers must be distinct and ascending")
    return layers


# where each family keeps its stack of blocks: BERT/RoBERTa/DeBERTa encoder.layer, DistilBERT
# transformer.layer, ModernBERT layers (no `encoder` wrapper)
_STACKS = ("encoder.layer", "transformer.layer", "layers")


def _stack(encoder: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """(the module holding the stack of transformer blocks, its attribute name)."""
    for path in _STACKS:
        *parents, name = path.split(".")
        obj = encoder
        for part in parents:
            obj = getattr(obj, part, None)
        if isinstance(getattr(obj, name, None), torch.nn.ModuleList):
            return obj, name
    raise ConfigError(f"cannot truncate a {encoder.config.model_type} encoder: it has no per-layer weights "
                      "(ALBERT shares one layer across depth)")


def encoder_layers(encoder: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks."""
    return getattr(*_stack(encoder))


def keep_layer_types(config, layers: list[int]) -> None:
    """Per-layer attention types (ModernBERT's `layer_types`: full_attention / sliding_attention)
    follow the kept layers, so each keeps the attention it was trained with and the saved config
    builds the same model again."""
    types = getattr(config, "layer_types", None)
    if types is not None:
        config.layer_types = [types[i] for i in layers]


def truncate(model: classifier.Classifier, layers: list[int]) -> classifier.Classifier:
    """Keep only `layers` of the encoder, with their weights; the config follows."""
    parent, name = _stack(model.encoder)
    stack = getattr(parent, name)
    kept = torch.nn.ModuleList([stack[i] for i in layers])
    for new_idx, block in enumerate(kept):
        for m in block.modules():           # cache bookkeeping indexes layers by position
            if hasattr(m, "layer_idx"):
                m.layer_idx = new_idx
    if model.encoder.config.model_type == "modernbert" and layers[0] != 0:
        # ModernBERT's first block has no pre-attention LayerNorm (the embeddings' norm stands in),
        # and transformers builds block 0 that way from any config: a kept LayerNorm there would be
        # dropped when the saved folder loads again, so drop it now and the model stays one model
        kept[0].attn_norm = torch.nn.Identity()
    setattr(parent, name, kept)
    model.encoder.config.num_hidden_layers = len(layers)
    keep_layer_types(model.encoder.config, layers)
    return model
