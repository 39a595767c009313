"""Every supported family builds tiny from a config-only folder; the builtin loads real weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import real_rows
from encoderlab import config as C
from encoderlab.errors import ConfigError
from encoderlab.models import classifier, registry


@pytest.fixture(scope="module")
def minilm_tokenizer_files():
    return registry.resolve("builtin:minilm-l6")


def _family_folder(family, folder, tokenizer_files):
    folder.mkdir()
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_files / f, folder / f)
    (folder / "config.json").write_text(json.dumps(registry.small_config(family)))
    return folder


@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_family_builds_random_and_learns_a_batch(family, tmp_path, minilm_tokenizer_files):
    """The registry is the test list: a family is tested the day it is registered."""
    folder = _family_folder(family, tmp_path / family, minilm_tokenizer_files)
    cfg = C.from_dict(C.ModelConfig, {"path": str(folder), "init": "random", "dropout": 0.0})
    torch.manual_seed(0)
    model, tok, _ = classifier.build(cfg, 3)
    assert model.encoder.config.model_type == family
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    rows = real_rows("wordnet-lexname", "train", n=12)
    texts, labels = [r["text"] for r in rows], torch.tensor([i % 3 for i in range(12)])
    batch = tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):         # the same 12 real glosses: the model must start memorising them
        out = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), labels=labels)
        assert out["logits"].shape == (12, 3)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert model.encoder.get_input_embeddings().weight.grad.abs().sum() > 0     # the encoder learns, not only the head
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_family_fits_saves_and_reloads(family, tmp_path, minilm_tokenizer_files, two_class_csv, store):
    """A few fit steps on real glosses, the model saved in Hugging Face format and loaded again."""
    from conftest import tiny_config
    from encoderlab.train.fit import fit
    folder = _family_folder(family, tmp_path / family, minilm_tokenizer_files)
    cfg = tiny_config(two_class_csv, model={"path": str(folder), "init": "random"}, data__max_train=96,
                      train__epochs=1)
    run = fit(cfg, store, progress=False)
    assert run.status == "completed" and 0 <= run.info["test_accuracy"] <= 1
    model, tok, meta = classifier.load(run.dir / "model")
    assert model.encoder.config.model_type == family and meta["labels"] == ["noun.animal", "noun.artifact"]
    batch = tok(["a domestic animal", "a tool"], padding=True, return_tensors="pt")
    assert model(batch["input_ids"], batch["attention_mask"])["logits"].shape == (2, 2)


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


def test_truncation_finds_each_familys_blocks_and_refuses_shared_ones(tmp_path, minilm_tokenizer_files):
    from encoderlab.models.layers import truncate
    for family, blocks in (("distilbert", "transformer.layer"), ("modernbert", "layers"), ("albert", None)):
        folder = _family_folder(family, tmp_path / family, minilm_tokenizer_files)
        model, _, _ = classifier.build(C.from_dict(C.ModelConfig, {"path": str(folder), "init": "random"}), 2)
        if blocks is None:      # ALBERT shares one layer across depth: nothing to cut
            with pytest.raises(ConfigError, match="cannot truncate a albert encoder"):
                truncate(model, [1])
            continue
        truncate(model, [1])
        assert len(model.encoder.get_submodule(blocks)) == 1 and model.encoder.config.num_hidden_layers == 1
