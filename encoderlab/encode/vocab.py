"""Tokenizers trained on your own corpus, saved in Hugging Face format.

    tok = train(read_corpus("corpus.txt"), "wordpiece", vocab_size=8000)   # or "bpe", "unigram"
    tok = train(read_corpus("ids.txt"), "ids", min_frequency=2)            # whitespace-separated integers
    save(tok, "my-tokenizer")      # tokenizer.json + tokenizer_config.json

`AutoTokenizer.from_pretrained("my-tokenizer")` loads the result, and `model.tokenizer =
"my-tokenizer"` uses it in `encoderlab run` and `encoderlab pretrain`. Every kind has the BERT
special tokens [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4) and builds "[CLS] A [SEP] B [SEP]".

An ID vocabulary maps each integer token to one id, most frequent first. Its unknown-ID policy
("unk": unseen IDs become [UNK]; "error": encoderlab refuses text holding one, naming the file and
row) is stored in tokenizer_config.json as `unknown_ids`; plain transformers always maps to [UNK].
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from encoderlab.data.corpus import Corpus
from encoderlab.errors import ConfigError, DataError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
KINDS = ("wordpiece", "bpe", "unigram", "ids")
UNKNOWN_POLICIES = ("unk", "error")
DEFAULT_VOCAB_SIZE = 8000          # subword kinds; an ID vocabulary keeps every frequent-enough ID
_IDS_LINE = re.compile(r"-?[0-9]+(?:\s+-?[0-9]+)*")
_ID = re.compile(r"-?[0-9]+")


def train(corpus: Corpus, kind: str, *, vocab_size: int = 0, min_frequency: int = 2,
          lowercase: bool = True, unknown_ids: str = "unk", max_length: int = 512):
    """A PreTrainedTokenizerFast trained on `corpus`; `vocab_size` 0 = the kind's default."""
    if kind not in KINDS:
        raise ConfigError(f"tokenizer kind '{kind}' is not one of {', '.join(KINDS)}")
    if unknown_ids not in UNKNOWN_POLICIES:
        raise ConfigError(f"unknown_ids '{unknown_ids}' is not one of {', '.join(UNKNOWN_POLICIES)}")
    if min_frequency < 1:
        raise ConfigError(f"min_frequency must be >= 1, got {min_frequency}")
    if kind == "ids":
        tok = _id_vocab(corpus, min_frequency, vocab_size, unknown_ids)
    else:
        if unknown_ids != "unk":
            raise ConfigError("unknown_ids applies to ID vocabularies (kind 'ids') only")
        tok = _subword(corpus, kind, vocab_size or DEFAULT_VOCAB_SIZE, min_frequency, lowercase)
    return wrap(tok, kind, max_length, unknown_ids if kind == "ids" else None)


def save(tokenizer, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return folder


def add_cls_sep_template(tok) -> None:
    """BERT's post-processing: [CLS] A [SEP] (B [SEP]), segment ids 0 / 1."""
    from tokenizers import processors
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])


def _subword(corpus: Corpus, kind: str, vocab_size: int, min_frequency: int, lowercase: bool):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    if vocab_size <= len(SPECIALS):
        raise ConfigError(f"vocab_size {vocab_size} leaves no room beside the {len(SPECIALS)} special tokens")
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase or None)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                            special_tokens=list(SPECIALS))
    elif kind == "bpe":
        # byte-level: every string is encodable, so [UNK] never occurs
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Sequence([normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else []))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      special_tokens=list(SPECIALS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), unk_token="[UNK]",
                                          show_progress=False)
    tok.train_from_iterator(corpus.sentences, trainer, length=len(corpus))
    add_cls_sep_template(tok)
    return tok


def check_ids(corpus: Corpus) -> None:
    """Every token of an ID corpus is an integer; else a DataError naming file, row and field."""
    for i, s in enumerate(corpus.sentences):
        if not _IDS_LINE.fullmatch(s):
            bad = next(t for t in s.split() if not _ID.fullmatch(t))
            raise DataError(f"token '{bad[:40]}' is not an integer ID (an ID corpus holds "
                            "whitespace-separated integers; use a subword kind for text)", **corpus.where(i))


def _id_vocab(corpus: Corpus, min_frequency: int, vocab_size: int, unknown_ids: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    check_ids(corpus)
    counts = Counter(t for s in corpus.sentences for t in s.split())
    kept = sorted((t for t, n in counts.items() if n >= min_frequency), key=lambda t: (-counts[t], int(t), t))
    if vocab_size:
        kept = kept[:max(0, vocab_size - len(SPECIALS))]
    if unknown_ids == "error" and len(kept) < len(counts):
        raise ConfigError(f"unknown_ids = 'error' but min_frequency {min_frequency} / vocab_size "
                          f"{vocab_size or 'all'} leave {len(counts) - len(kept)} of the corpus's own IDs out: "
                          "its text could not be encoded; use min_frequency 1 and no size cap, or unknown_ids 'unk'")
    if not kept:
        raise DataError(f"no ID occurs at least {min_frequency} times", file=", ".join(corpus.files))
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({t: i for i, t in enumerate(kept, len(SPECIALS))})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    add_cls_sep_template(tok)
    return tok


def wrap(tok, kind: str, max_length: int, unknown_ids: str | None):
    """A `tokenizers.Tokenizer` as the Hugging Face fast tokenizer we save (special tokens, our kind)."""
    from transformers import PreTrainedTokenizerFast
    extra = {"unknown_ids": unknown_ids} if unknown_ids else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=max_length, encoderlab_kind=kind,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"], **extra)


def unknown_policy(tokenizer) -> str:
    return getattr(tokenizer, "init_kwargs", {}).get("unknown_ids") or "unk"


def check_known(tokenizer, ids, texts: list[str], pairs: list[str] | None, where) -> None:
    """With unknown_ids = "error": a DataError for the first example encoded with [UNK].

    `ids` are the encoded examples, `where(i)` gives DataError keywords for example i."""
    if unknown_policy(tokenizer) != "error":
        return
    unk = tokenizer.unk_token_id
    for i, x in enumerate(ids):
        if unk in x:
            vocab = tokenizer.get_vocab()
            words = texts[i].split() + (pairs[i].split() if pairs is not None else [])
            bad = next((t for t in words if t not in vocab), tokenizer.unk_token)
            shown = texts[i] if len(texts[i]) <= 60 else texts[i][:57] + "..."
            raise DataError(f"ID '{bad[:40]}' (in \"{shown}\") is not in the vocabulary and the tokenizer's "
                            "unknown_ids is 'error'; retrain it on this data, or with --unknown-ids unk",
                            **where(i))


def describe(tokenizer, corpus: Corpus, sample: int = 20000) -> dict:
    """Vocabulary size, [UNK] share and tokens per sentence on (a sample of) the corpus."""
    sents = corpus.sentences[:sample]
    enc = tokenizer(sents, add_special_tokens=False)["input_ids"]
    n_tok = sum(len(x) for x in enc)
    unk = tokenizer.unk_token_id
    return {"kind": tokenizer.init_kwargs.get("encoderlab_kind", "?"), "vocab_size": len(tokenizer),
            "sentences": len(corpus), "documents": int(corpus.doc[-1]) + 1,
            "tokens_per_sentence": n_tok / max(len(sents), 1),
            "unk_share": sum(x.count(unk) for x in enc) / max(n_tok, 1),
            "unknown_ids": unknown_policy(tokenizer) if tokenizer.init_kwargs.get("encoderlab_kind") == "ids" else None}
