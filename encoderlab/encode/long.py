"""Texts longer than `encode.max_length`: which tokens a model sees (`encode.long`), and how many
were dropped.

A text is tokenized once, whole and without special tokens; the policy then picks its tokens and
wraps them in the tokenizer's own specials ([CLS] ... [SEP] for BERT):

- head: the first `budget` tokens (budget = max_length minus the specials), what the tokenizer's
  own truncation keeps; the default.
- tail: the last `budget` tokens.
- head+tail: the first quarter of the budget and the last three quarters (Sun et al. 2019, "How
  to fine-tune BERT for text classification": head 128 + tail 382 of 510 was their best).
- chunks: every window of `budget` tokens, each sharing `encode.stride` tokens with the previous
  one; a document is `Windows`. Training sees one window per document per epoch, drawn afresh each
  epoch from (train.seed, epoch), so a resumed run draws the same ones; evaluation and predict
  score every window and pool the window logits per document (`encode.pool`: mean or max), so
  metrics and predictions stay one per document.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from encoderlab.encode.text import Encoded
from encoderlab.errors import ConfigError

POLICIES = ("head", "tail", "head+tail", "chunks")
HEAD_SHARE = 0.25     # head+tail: share of the budget given to the head (Sun et al. 2019: 128 of 510)


def specials(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text ([CLS], [SEP] for BERT; <s>, </s>
    for RoBERTa), found by encoding one word with and without them."""
    with_ = tokenizer("a", add_special_tokens=True)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    for i in range(len(with_) - len(bare) + 1):
        if with_[i:i + len(bare)] == bare:
            return list(with_[:i]), list(with_[i + len(bare):])
    raise ConfigError("encode.long: cannot tell this tokenizer's special tokens apart from the text")


def select(tokens: np.ndarray, budget: int, policy: str) -> np.ndarray:
    """The tokens of one text a single-window policy keeps (all of them when they fit)."""
    n = len(tokens)
    if n <= budget:
        return tokens
    if policy == "head":
        return tokens[:budget]
    if policy == "tail":
        return tokens[n - budget:]
    if policy == "head+tail":
        h = int(budget * HEAD_SHARE)
        return np.concatenate([tokens[:h], tokens[n - (budget - h):]])
    raise ValueError(policy)


def window_starts(n: int, budget: int, stride: int) -> list[int]:
    """Start of each window over `n` tokens: windows of `budget` tokens, each overlapping the
    previous by `stride`, the last one ending at the text's end (it may be shorter)."""
    step = budget - stride
    extra = max(0, n - budget)      # tokens past the first window; each further window covers `step` more
    return [k * step for k in range(1 + -(-extra // step))]


def check(budget: int, stride: int, policy: str) -> None:
    if budget < 1:
        raise ConfigError("encode.max_length leaves no room for text after the special tokens")
    if policy == "head+tail" and int(budget * HEAD_SHARE) < 1:
        raise ConfigError(f"encode.long = 'head+tail' needs encode.max_length large enough for a head "
                          f"(the budget is {budget} tokens)")
    if policy == "chunks" and not 0 <= stride < budget:
        raise ConfigError(f"encode.stride = {stride} must be below the window's text tokens ({budget} = "
                          "encode.max_length minus the special tokens): windows would not advance")


@dataclass
class Windows:
    """A split of documents, each one or more windows. `win` holds the windows (labels repeated per
    window); `doc[w]` is window w's document. Lengths, `len` and `labels` are per document, so
    evaluation scores documents."""
    win: Encoded
    doc: np.ndarray           # (W,) document of each window, non-decreasing
    doc_labels: np.ndarray    # (N,) or (N, K)
    pool: str                 # "mean" | "max": window logits -> document logits

    def __len__(self) -> int:
        return len(self.doc_labels)

    @property
    def labels(self) -> np.ndarray:
        return self.doc_labels

    @labels.setter
    def labels(self, value: np.ndarray) -> None:     # the task's training scale (regression)
        self.doc_labels = value
        self.win.labels = value[self.doc]

    @property
    def counts(self) -> np.ndarray:
        """(N,) windows per document."""
        return np.bincount(self.doc, minlength=len(self))

    @property
    def lengths(self) -> np.ndarray:
        """(N,) tokens of each document's longest window."""
        out = np.zeros(len(self), dtype=np.int64)
        np.maximum.at(out, self.doc, self.win.lengths)
        return out

    @property
    def at_limit(self) -> int:
        """Documents longer than one window (none of their text is dropped)."""
        return int((self.counts > 1).sum())

    @property
    def stats(self) -> dict:
        return self.win.stats

    def sample(self, seed: int) -> Encoded:
        """One window per document, drawn with `seed`: what a training epoch sees (N rows)."""
        first = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        pick = first + np.floor(np.random.default_rng(seed).random(len(self)) * self.counts).astype(np.int64)
        w = self.win
        return Encoded([w.ids[i] for i in pick], None, w.lengths[pick], self.doc_labels, self.at_limit,
                       w.pad_id, stats=self.win.stats)

    def pool_logits(self, logits: np.ndarray) -> np.ndarray:
        """(W, K) window logits -> (N, K) document logits."""
        out = np.zeros((len(self), logits.shape[1]), dtype=logits.dtype)
        if self.pool == "max":
            out.fill(-np.inf)
            np.maximum.at(out, self.doc, logits)
        else:
            np.add.at(out, self.doc, logits)
            out /= self.counts[:, None]
        return out


def encode_long(tokenizer, split, max_length: int, policy: str, stride: int = 0, pool: str = "mean"):
    """A single-text split under `policy`: an `Encoded` (head, tail, head+tail) or `Windows`
    (chunks). Both carry `stats`: examples cut, tokens dropped, windows per document."""
    before, after = specials(tokenizer)
    budget = max_length - len(before) - len(after)
    check(budget, stride, policy)
    out = tokenizer(split.texts, add_special_tokens=False, truncation=False, padding=False,
                    return_attention_mask=False, return_token_type_ids=False, verbose=False)
    toks = [np.asarray(x, dtype=np.int64) for x in out["input_ids"]]
    wrap_b, wrap_a = np.asarray(before, dtype=np.int64), np.asarray(after, dtype=np.int64)
    full = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
    cut = full > budget
    pad = tokenizer.pad_token_id or 0
    if policy != "chunks":
        ids = [np.concatenate([wrap_b, select(t, budget, policy), wrap_a]) for t in toks]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        stats = _stats(full, cut, np.minimum(full, budget).sum())
        return Encoded(ids, None, lengths, split.labels, int((lengths >= max_length).sum()), pad, stats=stats)
    ids, doc = [], []
    for d, t in enumerate(toks):
        for s in window_starts(len(t), budget, stride):
            ids.append(np.concatenate([wrap_b, t[s:s + budget], wrap_a]))
            doc.append(d)
    doc = np.asarray(doc, dtype=np.int64)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    counts = np.bincount(doc, minlength=len(toks))
    stats = {**_stats(full, cut, full.sum()), "windows_mean": float(counts.mean()) if len(counts) else 0.0,
             "windows_max": int(counts.max(initial=0)), "windows": int(len(ids))}
    win = Encoded(ids, None, lengths, split.labels[doc], int((lengths >= max_length).sum()), pad, stats=stats)
    return Windows(win, doc, split.labels, pool)


def _stats(full: np.ndarray, cut: np.ndarray, kept: int) -> dict:
    total = int(full.sum())
    return {"examples": int(len(full)), "cut": int(cut.sum()),
            "cut_share": float(cut.mean()) if len(full) else 0.0,
            "tokens": total, "dropped_share": float(1.0 - kept / total) if total else 0.0,
            "mean_text_tokens": float(full.mean()) if len(full) else 0.0}


def for_training(enc, seed: int):
    """What one training epoch iterates: the split itself, or one window per document."""
    return enc.sample(seed) if isinstance(enc, Windows) else enc
