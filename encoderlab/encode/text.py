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
from encoderlab.errors import ConfigError


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
    stats: dict | None = None   # what the length limit cut: examples, cut, cut_share, tokens, dropped_share
                                # (+ windows_mean / windows_max under encode.long = "chunks")

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """The model inputs of examples `idx` (the fit loop asks every task's encoded data this)."""
        return collate(self, idx, self.pad_id)


def encode_split(tokenizer, split: Split, max_length: int, truncation: str, long: str = "head",
                 stride: int = 0, pool: str = "mean"):
    """Token ids of a split: an `Encoded`, or under `long = "chunks"` a `long.Windows` (several
    windows per document). Single texts follow the long-text policy (encode/long.py); pairs share
    the budget as `truncation` says (the tokenizer's own truncation) and accept only "head"."""
    if split.pairs is None:
        from encoderlab.encode.long import encode_long
        enc = encode_long(tokenizer, split, max_length, long, stride, pool)
        if hasattr(enc, "win"):     # windows: example i of the check is window i of document doc[i]
            check_known(tokenizer, enc.win.ids, [split.texts[d] for d in enc.doc], None,
                        lambda i: {"file": split.source or None})
        else:
            check_known(tokenizer, enc.ids, split.texts, None, lambda i: {"file": split.source or None})
        return enc
    if long != "head":
        raise ConfigError(f"encode.long = '{long}' applies to single texts; a pair shares encode.max_length "
                          "as encode.truncation says (longest_first, only_first, only_second)")
    out = tokenizer(split.texts, split.pairs, truncation=truncation,
                    max_length=max_length, padding=False, return_attention_mask=False,
                    return_token_type_ids=True)
    ids = [np.asarray(x, dtype=np.int64) for x in out["input_ids"]]
    check_known(tokenizer, ids, split.texts, split.pairs, lambda i: {"file": split.source or None})
    types = [np.asarray(x, dtype=np.int64) for x in out["token_type_ids"]] if "token_type_ids" in out else None
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    # what the cut dropped: the whole pairs' lengths, tokenized once more without a limit
    whole = tokenizer(split.texts, split.pairs, truncation=False, padding=False, return_attention_mask=False,
                      return_token_type_ids=False, verbose=False)["input_ids"]
    full = np.fromiter((len(x) for x in whole), dtype=np.int64, count=len(whole))
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    text = np.maximum(full - specials, 0)
    stats = {"examples": len(ids), "cut": int((full > lengths).sum()),
             "cut_share": float((full > lengths).mean()) if len(ids) else 0.0, "tokens": int(text.sum()),
             "dropped_share": float((full - lengths).sum() / text.sum()) if text.sum() else 0.0,
             "mean_text_tokens": float(text.mean()) if len(ids) else 0.0}
    return Encoded(ids, types, lengths, split.labels, int((lengths >= max_length).sum()),
                   tokenizer.pad_token_id or 0, stats=stats)


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
