"""The distillation recipe: a truncated or fresh student learns from a stored teacher run; the
teacher's train logits are cached once; hidden-state / attention matching follow the layer map."""

from __future__ import annotations

import json

import pytest

from encoderlab import config as C
from encoderlab.errors import ConfigError
from encoderlab.train.distill import distill, layer_map


def _cfg(teacher, **overrides):
    raw = C.to_dict(teacher.config())
    raw["name"] = "student"
    raw["compress"] = {"teacher": teacher.id, **overrides.pop("compress", {})}
    raw["train"].update(epochs=2, lr=3e-3)
    for k, v in overrides.items():
        C.set_dotted(raw, k.replace("__", "."), v)
    return C.from_dict(C.ExperimentConfig, raw)


def test_layer_map_uniform_and_explicit():
    cc = C.CompressConfig()
    assert layer_map(cc, 2, 6) == [3, 6] and layer_map(cc, 3, 6) == [2, 4, 6] and layer_map(cc, 1, 6) == [6]
    assert layer_map(C.CompressConfig(layer_map=(1, 6)), 2, 6) == [1, 6]
    with pytest.raises(ConfigError, match="2 layers"):
        layer_map(C.CompressConfig(layer_map=(6,)), 2, 6)
    with pytest.raises(ConfigError, match="within 1 .. 6"):
        layer_map(C.CompressConfig(layer_map=(0, 6)), 2, 6)


def test_distill_truncated_student_caches_teacher_logits(tiny_teacher):
    store, teacher = tiny_teacher
    run = distill(_cfg(teacher, compress={"layers": "first:1", "temperature": 3.0}), store, progress=False)
    assert run.status == "completed" and run.info["parent"] == teacher.id
    assert json.loads((run.dir / "model" / "config.json").read_text())["num_hidden_layers"] == 1
    assert run.info["distill"]["teacher_logits_cached"]
    caches = list((teacher.dir / "cache").glob("train-logits-*.npy"))
    assert len(caches) == 1
    stamp = caches[0].stat().st_mtime_ns
    train = [e for e in run.events() if e["split"] == "train"]
    assert len(train) == 2 and train[0]["metrics"]["soft"] > 0 and train[0]["metrics"]["hard"] > 0
    assert 0 <= run.info["test_accuracy"] <= 1
    distill(_cfg(teacher, compress={"layers": "first:1", "soft_weight": 1.0}), store, progress=False)
    assert caches[0].stat().st_mtime_ns == stamp            # computed once, reused


def test_distill_hidden_and_attention_matching(tiny_teacher):
    store, teacher = tiny_teacher
    run = distill(_cfg(teacher, compress={"layers": "first:1", "hidden_weight": 1.0, "attention_weight": 1.0}),
                  store, progress=False)
    assert run.info["distill"]["layer_map"] == [2]          # 1 student layer <- teacher's top layer
    m = [e for e in run.events() if e["split"] == "train"][0]["metrics"]
    assert m["hidden"] > 0 and m["attention"] > 0


def test_distill_into_a_narrower_fresh_student(tiny_teacher):
    store, teacher = tiny_teacher
    run = distill(_cfg(teacher, compress={"student": "model", "hidden_weight": 0.5},
                       model__hidden_size=8, model__num_heads=2, model__intermediate_size=16, model__num_layers=1),
                  store, progress=False)
    cfg = json.loads((run.dir / "model" / "config.json").read_text())
    assert cfg["hidden_size"] == 8 and cfg["num_hidden_layers"] == 1 and run.status == "completed"


def test_distill_errors_are_clear(tiny_teacher):
    store, teacher = tiny_teacher
    with pytest.raises(ConfigError, match="compress.teacher is empty"):
        distill(C.replace(_cfg(teacher), **{"compress.teacher": ""}), store, progress=False)
    with pytest.raises(ConfigError, match="compress.layers"):
        distill(_cfg(teacher, compress={"layers": "first:9"}), store, progress=False)
