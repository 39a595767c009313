"""AdamW parameter groups (no decay on biases/norms, layer-wise lr decay, freezing) and schedules."""

from __future__ import annotations

import math
import re

import torch

from encoderlab.config import TrainConfig

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def _depth(name: str, num_layers: int) -> int:
    """0 = embeddings, 1..L = encoder layers, L+1 = everything above (head, final norms)."""
    if not name.startswith("encoder."):
        return num_layers + 1
    if "embeddings" in name:
        return 0
    m = _LAYER.search(name)
    return int(m.group(1)) + 1 if m else num_layers + 1


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    L = getattr(model.encoder.config, "num_hidden_layers", 0)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        depth = _depth(name, L)
        if (cfg.freeze_embeddings and depth == 0) or (0 < depth <= cfg.freeze_layers):
            p.requires_grad_(False)
            continue
        if not p.requires_grad:
            continue
        is_head = not name.startswith("encoder.")
        lr = (cfg.head_lr or cfg.lr) if is_head else cfg.lr * cfg.layer_lr_decay ** (L + 1 - depth)
        decay = 0.0 if p.ndim == 1 else cfg.weight_decay  # biases and LayerNorm weights are 1-D
        key = (lr, decay)
        groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": decay})["params"].append(p)
    return list(groups.values())


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    device = next(model.parameters()).device
    # the fused kernel updates all parameters in one pass (notably faster for the 11.7M-entry
    # embedding matrix on CPU); fall back where it is not built
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """1) linear warmup from 0  2) linear / cosine decay to 0 (or constant) over the rest."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(1.0, progress)
    return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress


def make_scheduler(opt, cfg: TrainConfig, total_steps: int):
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, warmup, cfg.schedule))


def apply_step(model: torch.nn.Module, opt, sched, max_grad_norm: float, tr: dict | None = None) -> None:
    """One optimizer step on the accumulated gradients: clip (the largest pre-clip norm kept in
    `tr["grad_norm_max"]` for the diagnostics), step, advance the schedule (None: no schedule), clear."""
    if max_grad_norm:
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
        if tr is not None:
            tr["grad_norm_max"] = max(tr.get("grad_norm_max", 0.0), norm)
    opt.step()
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)
