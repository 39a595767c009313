"""Masked-language-model examples: a corpus tokenized once, sentences packed into single or paired
examples up to max_length, a held-out split, and masked batches (80/10/10, optional whole-word
masking; NSP / SOP pairs). Masks and pair draws are a pure function of the rng they are given, so a
resumed pretraining run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from encoderlab import config as C
from encoderlab.data.corpus import Corpus
from encoderlab.encode.vocab import check_known
from encoderlab.errors import ConfigError


@dataclass
class Tokens:
    """Every corpus sentence tokenized once, without special tokens."""
    ids: list[np.ndarray]       # per sentence, int64
    starts: list[np.ndarray]    # per sentence, bool: token begins a word (whole-word masking)
    doc: np.ndarray             # (N,) document of each sentence


@dataclass
class Examples:
    """Pretraining examples: segment A, the true segment B (-1 = single segment), and the
    sentences a random B (next-sentence negative) may be drawn from."""
    first: np.ndarray
    second: np.ndarray
    lengths: np.ndarray         # (N,) tokens with specials, capped at max_length (for bucketing)
    pool: np.ndarray            # sentence ids of this side of the split

    def __len__(self) -> int:
        return len(self.first)

    def subset(self, idx: np.ndarray) -> "Examples":
        return Examples(self.first[idx], self.second[idx], self.lengths[idx], self.pool)


def tokenize(tokenizer, corpus: Corpus) -> Tokens:
    enc = tokenizer(corpus.sentences, add_special_tokens=False, return_attention_mask=False)
    ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
    check_known(tokenizer, ids, corpus.sentences, None, corpus.where)
    starts = []
    for i, x in enumerate(ids):
        words = np.asarray([-1 if w is None else w for w in enc.word_ids(i)], dtype=np.int64)
        starts.append(np.concatenate([[True], words[1:] != words[:-1]]) if len(x) else np.zeros(0, bool))
    return Tokens(ids, starts, corpus.doc)


def make_examples(tok: Tokens, pairs: bool, max_length: int) -> Examples:
    """With `pairs`, consecutive sentences of a document form (A, B) examples and one-sentence
    documents stay single; without, every sentence is its own example."""
    n = len(tok.ids)
    if pairs:
        same = tok.doc[:-1] == tok.doc[1:]                     # sentence i and i+1 share a document
        first = np.flatnonzero(same)
        second = first + 1
        alone = np.ones(n, bool)
        alone[first], alone[second] = False, False
        singles = np.flatnonzero(alone)
        first = np.concatenate([first, singles])
        second = np.concatenate([second, np.full(len(singles), -1)])
        order = np.argsort(first, kind="stable")
        first, second = first[order], second[order]
    else:
        first, second = np.arange(n), np.full(n, -1)
    la = np.fromiter((len(tok.ids[i]) for i in first), np.int64, len(first))
    lb = np.fromiter((len(tok.ids[j]) if j >= 0 else 0 for j in second), np.int64, len(second))
    lengths = np.minimum(la + lb + np.where(second >= 0, 3, 2), max_length)
    return Examples(first, second, lengths, np.arange(n))


def split_heldout(ex: Examples, tok: Tokens, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Whole documents are held out (no sentence on both sides); a corpus of fewer than 20
    documents (a text file without blank lines) is split by example instead."""
    rng = np.random.default_rng(seed)
    docs = np.unique(tok.doc)
    if len(docs) >= 20:
        held_docs = rng.permutation(docs)[:max(1, round(fraction * len(docs)))]
        held_sent = np.isin(tok.doc, held_docs)
        held = held_sent[ex.first]
    else:
        held = np.zeros(len(ex), bool)
        held[rng.permutation(len(ex))[:max(1, round(fraction * len(ex)))]] = True
        held_sent = np.zeros(len(tok.ids), bool)
        held_sent[ex.first[held]] = True
        held_sent[ex.second[held & (ex.second >= 0)]] = True
    train, heldout = ex.subset(np.flatnonzero(~held)), ex.subset(np.flatnonzero(held))
    train.pool, heldout.pool = np.flatnonzero(~held_sent), np.flatnonzero(held_sent)
    if not len(heldout.pool):
        heldout.pool = train.pool
    if not len(train.pool):
        train.pool = heldout.pool
    return train, heldout


def cap(ex: Examples, n: int, seed: int) -> Examples:
    if not n or len(ex) <= n:
        return ex
    return ex.subset(np.sort(np.random.default_rng(seed).permutation(len(ex))[:n]))


# -- batches and masking ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Special:
    cls: int
    sep: int
    pad: int
    mask: int
    all: np.ndarray             # every special id: never chosen for prediction
    replacements: np.ndarray    # ids a chosen token may be replaced by (10% case): non-special


def special_ids(tokenizer) -> Special:
    need = {"cls_token": tokenizer.cls_token_id, "sep_token": tokenizer.sep_token_id,
            "mask_token": tokenizer.mask_token_id, "pad_token": tokenizer.pad_token_id}
    missing = [k for k, v in need.items() if v is None]
    if missing:
        raise ConfigError(f"the tokenizer has no {', '.join(missing)}; pretraining needs [CLS] [SEP] [MASK] "
                          "[PAD] (tokenizers from `encoderlab tokenizer train` have them)")
    specials = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    return Special(need["cls_token"], need["sep_token"], need["pad_token"], need["mask_token"], specials,
                   np.setdiff1d(np.arange(len(tokenizer)), specials))


def _fit_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Longest first: the longer segment gives up tokens until both fit in `budget`."""
    if la + lb <= budget:
        return la, lb
    if la <= budget // 2:
        return la, budget - la
    if lb <= budget // 2:
        return budget - lb, lb
    return budget - budget // 2, budget // 2


def _negative(ex: Examples, tok: Tokens, a: int, rng: np.random.Generator) -> int:
    """A random sentence from another document (next-sentence negative); any other sentence
    when the corpus is one document."""
    for _ in range(10):
        r = int(ex.pool[rng.integers(len(ex.pool))])
        if tok.doc[r] != tok.doc[a]:
            return r
    return r


def mask_tokens(ids: np.ndarray, eligible: np.ndarray, word_start: np.ndarray, rate: float,
                whole_word: bool, sp: Special, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Choose ~`rate` of the eligible tokens (B, T) for prediction: 80% become [MASK], 10% a random
    token, 10% stay. Returns (input ids, labels with -100 where nothing is predicted)."""
    u = rng.random(ids.shape)
    if whole_word:
        # every token takes the draw of its word's first token, so words are chosen whole
        T = ids.shape[1]
        start = np.maximum.accumulate(np.where(word_start, np.arange(T), 0), axis=1)
        u = np.take_along_axis(u, start, axis=1)
    chosen = (u < rate) & eligible
    if not chosen.any() and eligible.any():      # the loss needs at least one prediction per batch
        r, t = np.argwhere(eligible)[rng.integers(eligible.sum())]
        chosen[r, t] = True
    action = rng.random(ids.shape)
    out = ids.copy()
    out[chosen & (action < 0.8)] = sp.mask
    rand = chosen & (action >= 0.8) & (action < 0.9)
    out[rand] = sp.replacements[rng.integers(len(sp.replacements), size=int(rand.sum()))]
    return out, np.where(chosen, ids, -100)


def make_batch(ex: Examples, tok: Tokens, idx: np.ndarray, pc: C.PretrainConfig, max_length: int,
               sp: Special, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] (B [SEP]) for the examples `idx`, padded to the longest: (B, T) tensors,
    with the sentence-pair task applied (random B for NSP, swapped order for SOP) and tokens masked."""
    rows, pair_labels = [], []
    for e in idx:
        a, b = int(ex.first[e]), int(ex.second[e])
        label = -100
        if b >= 0:
            if pc.objective == "mlm+nsp":
                label = int(rng.random() < 0.5)            # 1 = B is a random sentence
                if label:
                    b = _negative(ex, tok, a, rng)
            elif pc.objective == "mlm+sop":
                label = int(rng.random() < 0.5)            # 1 = the two segments are swapped
                if label:
                    a, b = b, a
            elif pc.pair_swap and rng.random() < pc.pair_swap:
                a, b = b, a
        if b >= 0:
            la, lb = _fit_pair(len(tok.ids[a]), len(tok.ids[b]), max_length - 3)
            parts = [([sp.cls], [True]), (tok.ids[a][:la], tok.starts[a][:la]), ([sp.sep], [True]),
                     (tok.ids[b][:lb], tok.starts[b][:lb]), ([sp.sep], [True])]
            n_first = la + 2
        else:
            la = min(len(tok.ids[a]), max_length - 2)
            parts = [([sp.cls], [True]), (tok.ids[a][:la], tok.starts[a][:la]), ([sp.sep], [True])]
            n_first = la + 2
        rows.append((np.concatenate([np.asarray(p[0], np.int64) for p in parts]),
                     np.concatenate([np.asarray(p[1], bool) for p in parts]), n_first))
        pair_labels.append(label)
    B, T = len(rows), max(len(r[0]) for r in rows)
    ids = np.full((B, T), sp.pad, dtype=np.int64)
    types = np.zeros((B, T), dtype=np.int64)
    attn = np.zeros((B, T), dtype=np.int64)
    start = np.ones((B, T), dtype=bool)
    for r, (x, s, n_first) in enumerate(rows):
        ids[r, :len(x)], start[r, :len(x)], attn[r, :len(x)] = x, s, 1
        types[r, n_first:len(x)] = 1
    eligible = (attn == 1) & ~np.isin(ids, sp.all)
    masked, labels = mask_tokens(ids, eligible, start, pc.mask_rate, pc.whole_word_masking, sp, rng)
    return {"input_ids": torch.from_numpy(masked), "attention_mask": torch.from_numpy(attn),
            "token_type_ids": torch.from_numpy(types), "mlm_labels": torch.from_numpy(labels),
            "pair_labels": torch.tensor(pair_labels, dtype=torch.int64)}


# -- the model -------------------------------------------------------------------------------------
