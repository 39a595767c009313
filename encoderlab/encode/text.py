"""Text -> token ids, and token ids -> padded batches.

Examples are tokenized once without padding; batches are padded only to their own longest
example (dynamic padding), and training batches are drawn from length-sorted pools
(bucketing) so little compute goes to padding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from encoderlab.data.dataset import Split
from encoderlab.encode.vocab import check_known


@dataclass
class Encoded:
    ids: list[np.ndarray]            # per example, int64 token ids incl. special tokens
    types: list[np.ndarray] | None   # per example segment ids (pairs), None if unused
    lengths: np.ndarray              # (N,)
    labels: np.ndarray               # (N,) int64, -1 = unlabelled
    at_limit: int                    # examples that hit max_length (truncated or exactly full)
    pad_id: int = 0
    feats: list[np.ndarray] | None = None   # task "sequence", scheme patch: (L, D) patch vectors
                                            # at token positions 1..L of each example

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """The model inputs of examples `idx` (the fit loop asks every task's encoded data this)."""
        return collate(self, idx, self.pad_id)


def encode_split(tokenizer, split: Split, max_length: int, truncation: str) -> Encoded:
    out = tokenizer(split.texts, split.pairs, truncation=truncation if split.pairs else True,
                    max_length=max_length, padding=False, return_attention_mask=False,
                    return_token_type_ids=split.pairs is not None)
    ids = [np.asarray(x, dtype=np.int64) for x in out["input_ids"]]
    check_known(tokenizer, ids, split.texts, split.pairs, lambda i: {"file": split.source or None})
    types = [np.asarray(x, dtype=np.int64) for x in out["token_type_ids"]] \
        if split.pairs is not None and "token_type_ids" in out else None
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    return Encoded(ids, types, lengths, split.labels, int((lengths >= max_length).sum()),
                   tokenizer.pad_token_id or 0)


def train_batches(lengths: np.ndarray, batch_size: int, seed: int, bucket: bool,
                  pool_batches: int = 50) -> list[np.ndarray]:
    """Shuffled batches for one epoch; with `bucket`, each batch holds examples of similar length.

    Pools of `pool_batches` batches are sorted by length and cut, then batch order is shuffled,
    so batches stay random across the epoch while padding inside each batch stays small."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    if bucket:
        pool = batch_size * pool_batches
        order = np.concatenate([
            chunk[np.argsort(lengths[chunk], kind="stable")]
            for chunk in np.array_split(order, max(1, int(np.ceil(len(order) / pool))))
        ])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Longest first, so memory peaks at the start and padding is minimal; callers re-order."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(enc: Encoded, idx: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the examples `idx` to the batch's longest one: (B, T) tensors."""
    T = int(enc.lengths[idx].max())
    B = len(idx)
    input_ids = np.full((B, T), pad_id, dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.int64)
    types = np.zeros((B, T), dtype=np.int64) if enc.types is not None else None
    for r, i in enumerate(idx):
        n = enc.lengths[i]
        input_ids[r, :n] = enc.ids[i]
        mask[r, :n] = 1
        if types is not None:
            types[r, :n] = enc.types[i]
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask),
             "labels": torch.from_numpy(enc.labels[idx])}
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    if enc.feats is not None:
        D = enc.feats[0].shape[1]
        patches = np.zeros((B, T, D), dtype=np.float32)
        where = np.zeros((B, T), dtype=bool)
        for r, i in enumerate(idx):
            L = len(enc.feats[i])
            patches[r, 1:L + 1] = enc.feats[i]
            where[r, 1:L + 1] = True
        batch["patches"], batch["patch_mask"] = torch.from_numpy(patches), torch.from_numpy(where)
    return batch


def padding_waste(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of token slots in `batches` that are padding."""
    real = sum(int(lengths[b].sum()) for b in batches)
    slots = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / slots if slots else 0.0
