"""Data-parallel plumbing for the fine-tuning recipe (torch.distributed), kept out of fit.py.

Every process ("rank") builds the same model from the same seed, walks the same length-bucketed
global batches (batch order is a pure function of train.seed and epoch) and trains on its slice
of each one: rank r takes examples r, r+N, r+2N ... of a global batch of train.batch_size, so
results are comparable with one process. DistributedDataParallel averages gradients; the loss of
each slice is weighted by its share of the global batch times N, so the averaged gradient equals
the single-process one. Validation runs on every rank (same weights, same numbers, so early
stopping agrees without messages); rank 0 alone writes the run store, checkpoints and trackers.

Launched by `encoderlab run exp.toml --nproc N` (which calls torchrun) or by torchrun itself:
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT come from the environment; gloo on
CPU, NCCL when CUDA is there."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def lead(self) -> bool:
        """The one process that writes (the store, checkpoints, trackers, the progress bar)."""
        return self.rank == 0

    def part(self, idx: np.ndarray) -> tuple[np.ndarray, int]:
        """This rank's examples of a global batch and how many count. A rank left without any
        (a last batch smaller than the world) runs one example with weight 0: every rank must
        take part in each gradient all-reduce."""
        mine = idx[self.rank::self.size]
        return (mine, len(mine)) if len(mine) else (idx[:1], 0)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to call in training: DDP around `model` when there are several ranks
        (parameters stay `model`'s, so optimizer and checkpoints see plain names)."""
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [model.device.index] if torch.cuda.is_available() and hasattr(model, "device") else None
        # unused parameters (word embeddings under series.scheme = "patch") must not stall the reduction
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def fork_rng(self, seed: int) -> None:
        """After the model is built (and DDP has broadcast rank 0's weights): give each rank its own
        dropout stream, else equally shaped slices would get the same masks. One process: no-op."""
        if self.size > 1:
            torch.manual_seed(seed * 1009 + self.rank)

    def fold(self, counts: dict, keys: tuple[str, ...] = ("loss", "correct", "seen", "tokens")) -> None:
        """Sum running counts over ranks into rank 0's copy (others restart from 0), in place:
        afterwards rank 0's numbers are the global ones and later sums stay additive."""
        if self.size == 1:
            return
        t = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        for k, v in zip(keys, t.tolist()):
            counts[k] = (v if isinstance(counts[k], float) else int(round(v))) if self.lead else type(counts[k])(0)

    def close(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def init() -> World:
    """The world this process is part of: one process, or a torch.distributed group from env."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local)


class Follower:
    """What ranks > 0 hold instead of a stored run: every write is rank 0's job."""
    id, dir, status = None, None, "running"

    def log(self, event: dict) -> None:
        pass

    def update(self, **fields) -> None:
        pass


def launch_command(nproc: int, argv: list[str]) -> list[str]:
    """torchrun on this machine running `python -m encoderlab.cli ARGV` in `nproc` processes."""
    import sys
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "encoderlab.cli", *argv]
