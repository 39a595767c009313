"""Per-segment token budgets for (context, candidate) pairs, and packing an example's K pairs.

`longest_first` silently cuts a 260/500-token pair to 255/255; here each segment has its own
budget (`ranking.context_tokens`, `ranking.candidate_tokens`) and its own way to cut: keep the
head, the tail, both ends, or (contexts) a window centred on the mention, so the mention and its
[M] ... [/M] markers always survive. Texts are tokenized once; pairs are concatenated per batch
and padded only to the batch's longest pair (dynamic padding)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from encoderlab.errors import ConfigError

MARKERS = ("[M]", "[/M]")


def add_markers(tokenizer, model=None) -> None:
    """Add the mention markers as special tokens (never split); grow the model's embeddings."""
    tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)},
                                 replace_extra_special_tokens=False)
    if model is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        from transformers.utils import logging as hf_logging
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()   # the mean-resizing notice is expected, not news
        try:
            model.resize_token_embeddings(len(tokenizer))
        finally:
            hf_logging.set_verbosity(verbosity)


def cut(ids: list[int], n: int, how: str) -> list[int]:
    """At most n ids: the first n (head), the last n (tail) or ceil(n/2) first + floor(n/2) last."""
    if len(ids) <= n:
        return ids
    if n <= 0:
        return []
    if how == "head":
        return ids[:n]
    if how == "tail":
        return ids[len(ids) - n:]
    if how == "head+tail":
        h = (n + 1) // 2
        return ids[:h] + ids[len(ids) - (n - h):]
    raise ConfigError(f"unknown truncation '{how}' (head, tail, head+tail)")


def centre(left: list[int], mention: list[int], right: list[int], n: int) -> list[int]:
    """A window of at most n ids around the mention: what is left of the budget after the mention
    is shared evenly between both sides; a short side gives its unused share to the other."""
    if len(left) + len(mention) + len(right) <= n:
        return left + mention + right
    mention = mention[:n]
    room = n - len(mention)
    keep_l = min(len(left), room // 2)
    keep_r = min(len(right), room - keep_l)
    keep_l = min(len(left), room - keep_r)      # the right side was short: give its share back
    return left[len(left) - keep_l:] + mention + right[:keep_r]


@dataclass
class Segments:
    """Token ids of texts without special tokens, cut to a budget; `cut` counts truncated texts."""
    ids: list[list[int]]
    full_lengths: np.ndarray
    truncated: int

    def __len__(self) -> int:
        return len(self.ids)


def _tok(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def encode_contexts(tokenizer, left, mention, right, budget: int, how: str, markers: bool) -> Segments:
    """Context segments of at most `budget` tokens including [CLS] and [SEP]. With markers the
    mention is wrapped in [M] ... [/M]; `mention` "" means no mention (multiple choice)."""
    n = budget - 2
    if n < 1:
        raise ConfigError(f"ranking.context_tokens = {budget} leaves no room after [CLS] and [SEP]")
    ls, ms, rs = _tok(tokenizer, left), _tok(tokenizer, mention), _tok(tokenizer, right)
    m_open, m_close = (tokenizer.convert_tokens_to_ids(list(MARKERS)) if markers else (None, None))
    out, full, cut_n = [], [], 0
    for l_ids, m_ids, r_ids, m_text in zip(ls, ms, rs, mention):
        if m_text and markers:
            m_ids = [m_open] + m_ids + [m_close]
        total = len(l_ids) + len(m_ids) + len(r_ids)
        full.append(total)
        if total > n:
            cut_n += 1
        if how == "mention" and m_text:
            out.append(centre(l_ids, m_ids, r_ids, n))
        else:
            out.append(cut(l_ids + m_ids + r_ids, n, "head" if how == "mention" else how))
    return Segments(out, np.asarray(full, dtype=np.int64), cut_n)


def encode_candidates(tokenizer, texts: list[str], budget: int, how: str, reserve: int) -> Segments:
    """Candidate segments of at most `budget` tokens including `reserve` special tokens
    ([SEP] in a pair; [CLS] + [SEP] when encoded alone)."""
    n = budget - reserve
    if n < 1:
        raise ConfigError(f"ranking.candidate_tokens = {budget} leaves no room for the candidate")
    ids = _tok(tokenizer, texts)
    full = np.asarray([len(x) for x in ids], dtype=np.int64)
    return Segments([cut(x, n, how) for x in ids], full, int((full > n).sum()))


def pair_batch(tokenizer, ctx: list[list[int]], cands: list[list[list[int]]]) -> dict[str, torch.Tensor]:
    """B contexts, each with its own K_b candidate segments -> the sum(K_b) pairs
    [CLS] context [SEP] candidate [SEP], padded to the longest pair (N, T), plus `cand_mask` (B, K)
    with K = max K_b: True where example b has a k-th candidate."""
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id or 0
    rows = [(c, k) for c, ks in zip(ctx, cands) for k in ks]
    T = max(len(c) + len(k) + 3 for c, k in rows)
    N = len(rows)
    ids = np.full((N, T), pad, dtype=np.int64)
    types = np.zeros((N, T), dtype=np.int64)
    att = np.zeros((N, T), dtype=np.int64)
    for r, (c, k) in enumerate(rows):
        seq = [cls] + c + [sep] + k + [sep]
        ids[r, :len(seq)] = seq
        types[r, len(c) + 2:len(seq)] = 1
        att[r, :len(seq)] = 1
    K = max(len(ks) for ks in cands)
    mask = np.zeros((len(cands), K), dtype=bool)
    for b, ks in enumerate(cands):
        mask[b, :len(ks)] = True
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(att),
            "token_type_ids": torch.from_numpy(types), "cand_mask": torch.from_numpy(mask)}


def single_batch(tokenizer, segs: list[list[int]]) -> dict[str, torch.Tensor]:
    """[CLS] segment [SEP] for each, padded to the longest: the bi-encoder's input (N, T)."""
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id or 0
    T = max(len(s) for s in segs) + 2
    ids = np.full((len(segs), T), pad, dtype=np.int64)
    att = np.zeros((len(segs), T), dtype=np.int64)
    for r, s in enumerate(segs):
        ids[r, :len(s) + 2] = [cls] + s + [sep]
        att[r, :len(s) + 2] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(att)}


def budget_stats(ctx: Segments, cand: Segments, pairs_per_batch: list[list[tuple[int, int]]],
                 ctx_budget: int, cand_budget: int) -> dict:
    """Truncation rates per segment and padding waste of batches of (context, candidate) pairs,
    against padding every pair to the full budget."""
    real = slots = 0
    for batch in pairs_per_batch:
        lens = [len(ctx.ids[c]) + len(cand.ids[k]) + 3 for c, k in batch]
        real += sum(lens)
        slots += max(lens) * len(lens)
    n_pairs = sum(len(b) for b in pairs_per_batch)
    return {"context_truncated": ctx.truncated / max(len(ctx), 1),
            "candidate_truncated": cand.truncated / max(len(cand), 1),
            "mean_pair_tokens": real / max(n_pairs, 1),
            "padding_waste": 1 - real / slots if slots else 0.0,
            "padding_waste_fixed": 1 - real / (n_pairs * (ctx_budget + cand_budget)) if n_pairs else 0.0}
