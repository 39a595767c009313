"""The ModernBERT family: `arch:modernbert` and local ModernBERT folders. Rotary positions, no
segment ids (pairs still work), the per-layer attention types following `model.num_layers`,
truncation and distillation, the sliding window honoured, mean pooling by default, and the whole
chain fit -> truncate -> distill -> ONNX on real WordNet glosses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import real_rows, tiny_config
from encoderlab import config as C
from encoderlab.errors import ConfigError
from encoderlab.models import classifier, registry
from encoderlab.models.layers import truncate
from encoderlab.train.fit import fit

FULL, SLIDING = "full_attention", "sliding_attention"
# ~0.5M parameters: MiniLM's WordPiece tokenizer with a 4-layer, 16-wide ModernBERT
TINY_MB = {"path": "arch:modernbert", "init": "random", "tokenizer": "builtin:minilm-l6", "num_layers": 4,
           "hidden_size": 16, "num_heads": 2, "intermediate_size": 32}


def _model_cfg(**over) -> C.ModelConfig:
    return C.from_dict(C.ModelConfig, {**TINY_MB, **over})


def _glosses(n: int) -> list[str]:
    return [r["text"] for r in real_rows("wordnet-lexname", "train", n=n)]


def test_arch_modernbert_builds_with_the_family_defaults():
    model, tok, folder = classifier.build(_model_cfg(), 3)
    c = model.encoder.config
    assert c.model_type == "modernbert" and len(model.encoder.layers) == c.num_hidden_layers == 4
    # ModernBERT-base's pattern (global every 3rd layer) cut to the 4 layers asked for
    assert c.layer_types == [FULL, SLIDING, SLIDING, FULL]
    assert [b.attention_type for b in model.encoder.layers] == c.layer_types
    assert model.pooling == "mean"                       # the family's classifier_pooling
    assert not model.uses_token_types                    # no segment embeddings
    assert c._attn_implementation in ("sdpa", "eager")   # no flash-attn on CPU
    # the special ids ModernBERT's config declares are the tokenizer's
    assert (c.pad_token_id, c.cls_token_id, c.sep_token_id) == (tok.pad_token_id, tok.cls_token_id,
                                                                tok.sep_token_id)
    assert model.encoder.get_input_embeddings().num_embeddings == len(tok)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    # layer-wise lr decay and freezing find ModernBERT's blocks (layers.N, no encoder.layer)
    from encoderlab.train.optim import param_groups
    lrs = {g["lr"] for g in param_groups(model, C.TrainConfig(lr=1.0, layer_lr_decay=0.5))}
    assert lrs == {0.5 ** k for k in range(6)}             # embeddings, 4 blocks, final norm + head
    # a deeper random model continues the pattern; head.pooling = "cls" still wins when asked
    deep, _, _ = classifier.build(_model_cfg(num_layers=7, head={"pooling": "cls"}), 3)
    assert deep.encoder.config.layer_types == [FULL, SLIDING, SLIDING] * 2 + [FULL]
    assert deep.pooling == "cls"


def test_a_local_modernbert_folder_loads_and_num_layers_keeps_the_first_layers(tmp_path):
    """A ModernBERT folder with weights (made here: none ship offline) loads like any local folder;
    model.num_layers keeps its first layers, their weights and their attention types."""
    src, tok, _ = classifier.build(_model_cfg(num_layers=6), 2)
    src.encoder.save_pretrained(tmp_path / "mb")
    tok.save_pretrained(tmp_path / "mb")
    model, _, _ = classifier.build(C.from_dict(C.ModelConfig, {"path": str(tmp_path / "mb"), "num_layers": 2}), 2)
    assert model.encoder.config.layer_types == [FULL, SLIDING] and len(model.encoder.layers) == 2
    assert torch.equal(model.encoder.layers[1].attn.Wqkv.weight, src.encoder.layers[1].attn.Wqkv.weight)
    assert model.pooling == "mean"


def test_a_hub_style_config_without_layer_types_is_read(tmp_path):
    """Released ModernBERT config.json files state the pattern as global_attn_every_n_layers and
    the rotary bases by name; transformers turns them into layer_types, which num_layers then cuts."""
    folder = tmp_path / "hub"
    folder.mkdir()
    config = {**registry.small_config("modernbert", num_hidden_layers=6), "global_attn_every_n_layers": 2,
              "global_rope_theta": 160000.0, "local_rope_theta": 10000.0, "classifier_pooling": "cls"}
    (folder / "config.json").write_text(json.dumps(config))
    cfg = C.from_dict(C.ModelConfig, {"path": str(folder), "init": "random", "tokenizer": "builtin:minilm-l6",
                                      "num_layers": 3})
    model, _, _ = classifier.build(cfg, 2)
    assert model.encoder.config.layer_types == [FULL, SLIDING, FULL]
    assert model.pooling == "cls"                          # the folder's own classifier_pooling


def test_irregular_attention_pattern_cannot_grow(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    config = registry.small_config("modernbert", num_hidden_layers=3)
    (folder / "config.json").write_text(json.dumps({**config, "layer_types": [FULL, FULL, SLIDING]}))
    cfg = C.from_dict(C.ModelConfig, {"path": str(folder), "init": "random", "tokenizer": "builtin:minilm-l6",
                                      "num_layers": 5})
    with pytest.raises(ConfigError, match="model.num_layers = 5: .* attention types for 3 layers"):
        classifier.build(cfg, 2)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_sliding_window_is_honoured(tmp_path, attn):
    """A sliding layer with a 16-token window (8 each side): only positions 22 .. 38 see position
    30; through a full-attention layer every position does."""
    ids = torch.randint(1000, 2000, (1, 40), generator=torch.Generator().manual_seed(0))
    far = ids.clone()
    far[0, 30] = 2500
    mask = torch.ones_like(ids)
    moved = {}
    for kind in (SLIDING, FULL):
        folder = tmp_path / kind
        folder.mkdir()
        config = {**registry.small_config("modernbert", num_hidden_layers=1), "layer_types": [kind]}
        (folder / "config.json").write_text(json.dumps(config))
        model, _, _ = classifier.build(C.from_dict(C.ModelConfig, {"path": str(folder), "init": "random",
                                                                   "tokenizer": "builtin:minilm-l6"}), 2)
        model.encoder.set_attn_implementation(attn)
        model.eval()
        with torch.no_grad():
            a = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[0]
            b = model.encoder(input_ids=far, attention_mask=mask).last_hidden_state[0]
        moved[kind] = (a - b).abs().amax(-1)              # (T,) change per position
    reach = (torch.arange(40) - 30).abs() <= 8            # positions 22 .. 38 see position 30
    assert moved[SLIDING][~reach].max() == 0 and moved[SLIDING][reach].min() > 0
    assert moved[FULL].min() > 0


def test_truncation_keeps_each_layers_attention_type_and_reloads_as_the_same_model(tmp_path):
    model, tok, _ = classifier.build(_model_cfg(), 2)
    truncate(model, [1, 3])                               # sliding, full
    model.eval()
    c = model.encoder.config
    assert c.num_hidden_layers == 2 and c.layer_types == [SLIDING, FULL]
    assert [b.attention_type for b in model.encoder.layers] == [SLIDING, FULL]
    assert [b.attn.sliding_window is not None for b in model.encoder.layers] == [True, False]
    classifier.save(model, tok, tmp_path / "m", {"labels": ["a", "b"], "head": C.to_dict(C.HeadConfig())})
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2 and saved["layer_types"] == [SLIDING, FULL]
    again, _, _ = classifier.load(tmp_path / "m")         # the config is valid and builds the same model
    batch = tok(_glosses(4), padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model(batch["input_ids"], batch["attention_mask"])["logits"]
        b = again(batch["input_ids"], batch["attention_mask"])["logits"]
    torch.testing.assert_close(a, b)


def test_pairs_work_without_segment_ids():
    model, tok, _ = classifier.build(_model_cfg(), 2)
    model.eval()
    a, b = _glosses(3), _glosses(6)[3:]
    batch = tok(a, b, padding=True, return_tensors="pt")
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert first[0] == tok.cls_token_id and first.count(tok.sep_token_id) == 2 and first[-1] == tok.sep_token_id
    with torch.no_grad():
        with_types = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])["logits"]
        without = model(batch["input_ids"], batch["attention_mask"])["logits"]
    assert torch.equal(with_types, without)                # segment ids are never fed to the encoder


def test_bf16_autocast_trains_on_cpu():
    model, tok, _ = classifier.build(_model_cfg(), 2)
    batch = tok(_glosses(8), padding=True, return_tensors="pt")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch["input_ids"], batch["attention_mask"], labels=torch.tensor([0, 1] * 4))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.encoder.layers[1].attn.Wqkv.weight.grad.abs().sum() > 0


def test_max_length_past_the_positions_is_refused(two_class_csv, store, tmp_path):
    folder = tmp_path / "mb"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(registry.small_config("modernbert")))   # 64 positions
    cfg = tiny_config(two_class_csv, encode__max_length=100,
                      model={"path": str(folder), "init": "random", "tokenizer": "builtin:minilm-l6"})
    with pytest.raises(ConfigError, match="encode.max_length = 100: the modernbert encoder has rotary positions "
                                          "configured up to 64 tokens"):
        fit(cfg, store, progress=False)


@pytest.fixture(scope="module")
def modernbert_chain(two_class_csv, tmp_path_factory):
    """A tiny random ModernBERT fine-tuned on real glosses, its layers 1 and 3 kept by truncate,
    and a student of its layers 0 and 3 distilled from it (with hidden-state matching)."""
    from encoderlab.cost import derive
    from encoderlab.store.runs import RunStore
    from encoderlab.train.distill import distill
    store = RunStore(tmp_path_factory.mktemp("modernbert") / "runs")
    teacher = fit(tiny_config(two_class_csv, name="mb", model=dict(TINY_MB), train__epochs=2), store,
                  progress=False)
    cut, _ = derive.truncate_run(store, teacher, "every:2")          # of 4: layers 1 (sliding), 3 (full)
    raw = C.to_dict(teacher.config())
    raw["name"] = "mb-student"
    raw["compress"] = {"teacher": teacher.id, "layers": "0,3", "hidden_weight": 1.0}
    raw["train"].update(epochs=1)
    student = distill(C.from_dict(C.ExperimentConfig, raw), store, progress=False)
    yield store, teacher, cut, student
    store.close()


def test_tiny_modernbert_fits_truncates_and_distills(modernbert_chain):
    _, teacher, cut, student = modernbert_chain
    assert teacher.status == "completed"
    assert teacher.info["test_accuracy"] > teacher.info["data"]["majority_baseline_test"]
    saved = json.loads((cut.dir / "model" / "config.json").read_text())
    assert saved["layer_types"] == [SLIDING, FULL] and saved["num_hidden_layers"] == 2
    assert cut.info["parent"] == teacher.id and 0 <= cut.info["test_accuracy"] <= 1
    saved = json.loads((student.dir / "model" / "config.json").read_text())
    assert saved["layer_types"] == [FULL, FULL] and saved["num_hidden_layers"] == 2
    assert student.status == "completed" and student.info["parent"] == teacher.id
    train = [e for e in student.events() if e["split"] == "train"]
    assert train and train[0]["metrics"]["hidden"] > 0 and train[0]["metrics"]["soft"] > 0


def test_distilled_modernbert_exports_to_onnx_with_equal_labels(modernbert_chain, two_class_csv):
    from encoderlab import predict as P
    from encoderlab.cost import derive
    store, _, _, student = modernbert_chain
    onnx_run, res = derive.export_run(store, student)
    check = res["equivalence"]
    assert check["examples"] == 80 and check["label_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-3
    test = str(two_class_csv / "test.csv")
    by_onnx, _ = P.predict(onnx_run, test, runtime="onnx")
    by_torch, _ = P.predict(student, test, runtime="torch")
    cols = ["p_noun.animal", "p_noun.artifact"]
    assert np.array_equal(by_onnx[cols].to_numpy().argmax(1), by_torch[cols].to_numpy().argmax(1))


def test_tiny_modernbert_trains_on_pairs_and_exports(store):
    """Real WordNet usage/definition pairs: [CLS] a [SEP] b [SEP], no segment ids anywhere."""
    from encoderlab.cost import derive
    raw = {"name": "mb-pairs", "data": {"source": "builtin:wordnet-usage", "max_train": 96, "max_eval": 40},
           "encode": {"max_length": 64}, "model": dict(TINY_MB),
           "train": {"epochs": 1, "batch_size": 16, "lr": 3e-3, "precision": "fp32", "threads": 1}}
    run = fit(C.from_dict(C.ExperimentConfig, raw), store, progress=False)
    assert run.status == "completed" and run.info["task"] == "pair"
    _, res = derive.export_run(store, run)
    assert res["equivalence"]["label_agreement"] == 1.0
