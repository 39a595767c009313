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


def encoder_layers(encoder: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks (BERT/RoBERTa: encoder.layer; DistilBERT: transformer.layer)."""
    for path in ("encoder.layer", "transformer.layer"):
        obj = encoder
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ConfigError(f"cannot truncate a {encoder.config.model_type} encoder: it has no per-layer weights "
                      "(ALBERT shares one layer across depth)")


def truncate(model: classifier.Classifier, layers: list[int]) -> classifier.Classifier:
    """Keep only `layers` of the encoder, with their weights; the config follows."""
    stack = encoder_layers(model.encoder)
    kept = torch.nn.ModuleList([stack[i] for i in layers])
    for new_idx, block in enumerate(kept):
        for m in block.modules():           # cache bookkeeping indexes layers by position
            if hasattr(m, "layer_idx"):
                m.layer_idx = new_idx
    parent = model.encoder.encoder if hasattr(model.encoder, "encoder") else model.encoder.transformer
    parent.layer = kept
    model.encoder.config.num_hidden_layers = len(layers)
    return model
