"""Checkpoints: weights (safetensors), optimizer/scheduler/RNG state (torch, weights_only), and
the loop position (json). Written to a temp folder, then renamed: a checkpoint is whole or absent."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from encoderlab.errors import StoreError
from encoderlab.faults import fault
from encoderlab.store import atomic


def save(folder: Path, model, optimizer, scheduler, state: dict) -> Path:
    final = folder / f"step-{state['step']}"
    tmp = folder / f".step-{state['step']}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        # save_model/load_model store tied weights (an MLM decoder sharing the embeddings) once
        save_model(model, str(tmp / "model.safetensors"))
        fault("checkpoint")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        atomic.publish_dir(tmp, final)
    except OSError as e:   # disk full, quota, permissions: the earlier checkpoints stay as they were
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(f"could not write checkpoint {final.name} in {folder}: {e.strerror or e}; "
                         "the previous checkpoints are intact (free space, then `encoderlab resume`)") from e
    return final


def load_weights(folder: Path, model) -> None:
    load_model(model, str(folder / "model.safetensors"))


def load(folder: Path, model, optimizer, scheduler) -> dict:
    load_weights(folder, model)
    try:   # weights_only: tensors and plain containers; anything that would run code is refused
        trainer = torch.load(folder / "trainer.pt", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreError(f"{folder / 'trainer.pt'}: refused to load (not a plain tensor state file, or "
                         f"damaged): {first}") from None
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    torch.set_rng_state(trainer["torch_rng"])
    return json.loads((folder / "state.json").read_text())


def prune(folder: Path, keep_last: int, keep: set[str]) -> None:
    """Delete all but the newest `keep_last` checkpoints and those named in `keep` (the best)."""
    steps = sorted((p for p in folder.glob("step-*") if p.is_dir()), key=lambda p: int(p.name[5:]))
    for p in steps[:-keep_last] if keep_last else steps:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
