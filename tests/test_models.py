"""Every supported family builds tiny from a config-only folder; the builtin loads real weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from encoderlab import config as C
from encoderlab.errors import ConfigError
from encoderlab.models import classifier, registry


@pytest.fixture(scope="module")
def minilm_tokenizer_files():
    return registry.resolve("builtin:minilm-l6")


@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_family_builds_random_and_classifies(family, tmp_path, minilm_tokenizer_files):
    """The registry is the test list: a family is tested the day it is registered."""
    folder = tmp_path / family
    folder.mkdir()
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_tokenizer_files / f, folder / f)
    (folder / "config.json").write_text(json.dumps(registry.small_config(family)))
    cfg = C.from_dict(C.ModelConfig, {"path": str(folder), "init": "random"})
    model, tok, _ = classifier.build(cfg, 3)
    batch = tok(["a dog", "a small grey cat"], padding=True, return_tensors="pt")
    out = model(batch["input_ids"], batch["attention_mask"], labels=torch.tensor([0, 2]))
    assert out["logits"].shape == (2, 3)
    assert model.encoder.config.model_type == family
    out["loss"].backward()
    assert model.head.net[-1].weight.grad is not None
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_builtin_pretrained_weights_load_and_truncate():
    cfg = C.from_dict(C.ModelConfig, {"path": "builtin:minilm-l6", "num_layers": 2})
    model, tok, folder = classifier.build(cfg, 2)
    assert len(model.encoder.encoder.layer) == 2
    from safetensors.torch import load_file
    ref = load_file(str(folder / "model.safetensors"))
    key = [k for k in ref if k.endswith("layer.1.attention.self.query.weight")][0]
    ours = dict(model.encoder.named_parameters())["encoder.layer.1.attention.self.query.weight"]
    assert torch.equal(ref[key], ours.detach())           # real weights, not random
    assert model.pooling == "mean"                         # sentence-transformers folder


def test_random_init_differs_from_pretrained():
    pre, _, _ = classifier.build(C.from_dict(C.ModelConfig, {"num_layers": 1}), 2)
    torch.manual_seed(0)
    rnd, _, _ = classifier.build(C.from_dict(C.ModelConfig, {"num_layers": 1, "init": "random"}), 2)
    a = pre.encoder.embeddings.word_embeddings.weight
    b = rnd.encoder.embeddings.word_embeddings.weight
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_size_overrides_need_random_init():
    with pytest.raises(ConfigError, match="random"):
        classifier.build(C.from_dict(C.ModelConfig, {"hidden_size": 32}), 2)


def test_bad_model_paths(tmp_path):
    with pytest.raises(ConfigError, match="builtin"):
        registry.resolve("builtin:nope")
    with pytest.raises(ConfigError, match="not a folder"):
        registry.resolve(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="config.json"):
        registry.resolve(str(tmp_path))


def test_save_and_load_roundtrip(tmp_path):
    cfg = C.from_dict(C.ModelConfig, {"init": "random", "num_layers": 1, "hidden_size": 16, "num_heads": 2,
                                      "intermediate_size": 32, "head": {"type": "mlp", "hidden": 8}})
    model, tok, _ = classifier.build(cfg, 2)
    model.eval()
    classifier.save(model, tok, tmp_path / "m", {"labels": ["x", "y"], "head": C.to_dict(cfg.head),
                                                  "max_length": 32, "truncation": "longest_first"})
    again, _, meta = classifier.load(tmp_path / "m")
    batch = tok(["hello there"], return_tensors="pt")
    with torch.no_grad():
        a = model(batch["input_ids"], batch["attention_mask"])["logits"]
        b = again(batch["input_ids"], batch["attention_mask"])["logits"]
    assert torch.allclose(a, b) and meta["labels"] == ["x", "y"]


@pytest.mark.parametrize("arch", sorted(registry.ARCHITECTURES))
def test_architecture_without_weights_takes_its_vocabulary_from_the_tokenizer(arch, tmp_path):
    from encoderlab.data.corpus import read_corpus
    from encoderlab.encode import vocab as V
    corpus = tmp_path / "ids.txt"
    corpus.write_text("\n".join(" ".join(str(i * j % 97) for j in range(12)) for i in range(1, 60)) + "\n")
    V.save(V.train(read_corpus(corpus), "ids", min_frequency=1), tmp_path / "vocab")
    cfg = C.from_dict(C.ModelConfig, {"path": f"arch:{arch}", "init": "random", "tokenizer": str(tmp_path / "vocab"),
                                      "num_layers": 2, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32})
    model, tok, folder = classifier.build(cfg, 3)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    assert model.encoder.config.model_type == arch
    assert model.encoder.get_input_embeddings().num_embeddings == len(tok) == 102
    batch = tok(["1 2 3", "4 5 6 7"], padding=True, return_tensors="pt")
    assert model(batch["input_ids"], batch["attention_mask"])["logits"].shape == (2, 3)
    assert f"arch:{arch}" in registry.list_models()


def test_architecture_and_tokenizer_mistakes_are_clear(tmp_path):
    with pytest.raises(ConfigError, match='set model.init = "random"'):
        classifier.build(C.from_dict(C.ModelConfig, {"path": "arch:bert", "tokenizer": "builtin:minilm-l6"}), 2)
    with pytest.raises(ConfigError, match="has no tokenizer; set model.tokenizer"):
        classifier.build(C.from_dict(C.ModelConfig, {"path": "arch:bert", "init": "random"}), 2)
    with pytest.raises(ConfigError, match="no architecture 'gpt'"):
        registry.resolve("arch:gpt")
    with pytest.raises(ConfigError, match="model.tokenizer: .* is not a folder"):
        registry.resolve_tokenizer(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="has no tokenizer.json"):
        registry.resolve_tokenizer(str(tmp_path))
    # pretrained weights with another tokenizer: its embeddings would not match the tokens
    from encoderlab.encode import vocab as V
    from encoderlab.data.corpus import read_corpus
    (tmp_path / "c.txt").write_text("1 2 3\n")
    V.save(V.train(read_corpus(tmp_path / "c.txt"), "ids", min_frequency=1), tmp_path / "v")
    with pytest.raises(ConfigError, match="model.tokenizer has 8 tokens but the pretrained model"):
        classifier.build(C.from_dict(C.ModelConfig, {"tokenizer": str(tmp_path / "v"), "num_layers": 1}), 2)


def test_pairs_feed_segment_ids_to_bert():
    """transformers wraps forward in decorators; segment ids must still reach the encoder."""
    model, _, _ = classifier.build(C.from_dict(C.ModelConfig, {"num_layers": 1}), 2)
    assert model.uses_token_types
