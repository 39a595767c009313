"""Vocabulary coverage: how much of the text a tokenizer maps to [UNK], and adding the missing pieces.

    cov = coverage(tokenizer, encoded.ids)             # [UNK] share of tokens, all-[UNK] examples
    counts = unknown_units(tokenizer, texts, "char")   # the characters (or words) behind the [UNK]s
    n = tokens_to_cover(counts, 0.95)                  # how many of them cover 95 % of the [UNK]s
    add_tokens(tokenizer, model.encoder, top(counts, n))

A WordPiece tokenizer maps a whole word to one [UNK] when it cannot spell it, so the text behind
each [UNK] comes from the fast tokenizer's offsets; a character of that text is unknown when it
alone tokenizes to [UNK]. Special tokens ([CLS], [SEP], [PAD]) count neither way."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from encoderlab.errors import ConfigError

UNITS = ("char", "word")
TOP_SHOWN = 20          # unknown units kept in the data summary
COVER = 0.95            # the summary's `to_cover`: units covering this share of the train [UNK]s


def coverage(tokenizer, ids: list[np.ndarray]) -> dict:
    """[UNK] share of the non-special tokens and share of examples made only of [UNK]s."""
    unk = tokenizer.unk_token_id
    if unk is None:         # a byte-level vocabulary spells everything: nothing is unknown
        unk = -1
    special = np.asarray(sorted(set(tokenizer.all_special_ids) - {unk}), dtype=np.int64)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    n_real = n_unk = np.zeros(len(ids), dtype=np.int64)
    if lengths.sum():       # one pass over all tokens, then per-example sums
        flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids])
        real = ~np.isin(flat, special)
        # an empty example's start may be the end of `flat`: clip it (its sums are zeroed below)
        starts = np.minimum(np.concatenate([[0], np.cumsum(lengths)[:-1]]), len(flat) - 1)
        n_real = np.where(lengths > 0, np.add.reduceat(real.astype(np.int64), starts), 0)
        n_unk = np.where(lengths > 0, np.add.reduceat((real & (flat == unk)).astype(np.int64), starts), 0)
    tokens, unknown = int(n_real.sum()), int(n_unk.sum())
    all_unknown = int(((n_real > 0) & (n_unk == n_real)).sum())
    return {"tokens": tokens, "unknown": unknown, "unk_share": unknown / tokens if tokens else 0.0,
            "examples": len(ids), "all_unknown": all_unknown,
            "all_unk_share": all_unknown / len(ids) if ids else 0.0}


def unknown_spans(tokenizer, texts: list[str]) -> list[str]:
    """The pieces of `texts` the tokenizer maps to [UNK], one per [UNK] token (fast tokenizers only)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("finding the text behind [UNK] tokens needs a fast (Rust) tokenizer with offsets")
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    out = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                    return_attention_mask=False)
    return [text[a:b] for text, ids, offs in zip(texts, out["input_ids"], out["offset_mapping"])
            for i, (a, b) in zip(ids, offs) if i == unk and b > a]


def unknown_units(tokenizer, texts: list[str], unit: str = "char", spans: list[str] | None = None) -> Counter:
    """How often each unknown character (or word: the whole text behind one [UNK]) occurs in `texts`
    (`spans`: their `unknown_spans`, when already known)."""
    if unit not in UNITS:
        raise ConfigError(f"encode.add_tokens_unit '{unit}' is not one of {', '.join(UNITS)}")
    spans = unknown_spans(tokenizer, texts) if spans is None else spans
    if getattr(tokenizer, "do_lower_case", False):   # an uncased tokenizer matches added tokens
        spans = [s.lower() for s in spans]           # against lowercased text: 'Ab' would never match
    if unit == "word":
        return Counter(spans)
    chars = Counter(c for s in spans for c in s if not c.isspace())
    return Counter({c: n for c, n in chars.items() if _alone_unknown(tokenizer, c)})


def _alone_unknown(tokenizer, char: str) -> bool:
    ids = tokenizer(char, add_special_tokens=False)["input_ids"]
    return tokenizer.unk_token_id in ids


def top(counts: Counter, n: int) -> list[str]:
    """The `n` most frequent units, ties in a fixed order (the unit itself) so a resume adds the same."""
    return [u for u, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def tokens_to_cover(counts: Counter, share: float) -> int:
    """The fewest most-frequent units whose occurrences reach `share` of all unknown occurrences."""
    total = sum(counts.values())
    if not total:
        return 0
    done = 0
    for n, (_, c) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), 1):
        done += c
        if done >= share * total:
            return n
    return len(counts)


def summary(tokenizer, ids: dict[str, list[np.ndarray]], train_texts: list[str], cover: float = COVER) -> dict:
    """What the data summary stores: per-split coverage, and the train [UNK]s behind the fix."""
    out = {"splits": {s: coverage(tokenizer, x) for s, x in ids.items()}}
    if getattr(tokenizer, "is_fast", False):
        spans = unknown_spans(tokenizer, train_texts)
        for unit in UNITS:
            counts = unknown_units(tokenizer, train_texts, unit, spans)
            out[f"train_{unit}s"] = {"distinct": len(counts), "occurrences": sum(counts.values()),
                                     "to_cover": tokens_to_cover(counts, cover),
                                     "top": [[u, counts[u]] for u in top(counts, TOP_SHOWN)]}
        out["cover"] = cover
    return out


def add_tokens(tokenizer, encoder, units: list[str]) -> dict:
    """Add `units` to the tokenizer and rows for them to the encoder's input embeddings.

    A new row starts as the mean of the embeddings of the pieces the old tokenizer splits the unit
    into, when those pieces are all known; otherwise as the mean of all old rows."""
    units = [u for u in units if u not in tokenizer.get_vocab()]
    if not units:
        return {"added": 0, "from_pieces": 0}
    unk = tokenizer.unk_token_id
    pieces = tokenizer(units, add_special_tokens=False)["input_ids"]       # before they are added
    old = encoder.get_input_embeddings().num_embeddings
    tokenizer.add_tokens(units)
    encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)   # rows set below
    emb = encoder.get_input_embeddings().weight         # (V_new, H)
    from_pieces = 0
    with torch.no_grad():
        mean = emb[:old].mean(0)
        for u, p in zip(units, pieces):
            row = tokenizer.convert_tokens_to_ids(u)
            if p and unk not in p:
                emb[row] = emb[torch.tensor(p)].mean(0)
                from_pieces += 1
            else:
                emb[row] = mean
    return {"added": len(units), "from_pieces": from_pieces}
