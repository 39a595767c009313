from __future__ import annotations

import numpy as np

from conftest import real_rows
from encoderlab.data.dataset import Split
from encoderlab.encode.text import collate, encode_split, padding_waste, train_batches
from encoderlab.models import registry


def _tok():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(registry.resolve("builtin:minilm-l6"))


def test_bucketing_cuts_padding_on_real_glosses():
    rows = real_rows("wordnet-lexname", "train", n=2000)
    split = Split("train", [r["text"] for r in rows], None, np.zeros(len(rows), dtype=np.int64))
    enc = encode_split(_tok(), split, 128, "longest_first")
    plain = padding_waste(enc.lengths, train_batches(enc.lengths, 32, 0, bucket=False))
    bucketed = padding_waste(enc.lengths, train_batches(enc.lengths, 32, 0, bucket=True))
    assert bucketed < plain / 3, (plain, bucketed)
    # every example appears exactly once per epoch, and order depends on the seed
    b0 = np.concatenate(train_batches(enc.lengths, 32, 0, True))
    assert sorted(b0.tolist()) == list(range(len(enc)))
    assert not np.array_equal(b0, np.concatenate(train_batches(enc.lengths, 32, 1, True)))


def test_pairs_get_segments_and_truncation_is_counted():
    rows = real_rows("wordnet-usage", "train", n=50)
    split = Split("train", [r["text_a"] for r in rows], [r["text_b"] for r in rows],
                  np.zeros(len(rows), dtype=np.int64))
    enc = encode_split(_tok(), split, 16, "longest_first")
    assert enc.lengths.max() == 16 and enc.at_limit > 0
    batch = collate(enc, np.arange(4), pad_id=0)
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == batch["attention_mask"].shape
    assert batch["token_type_ids"].max() == 1
    assert (batch["attention_mask"].sum(1).numpy() == enc.lengths[:4]).all()
