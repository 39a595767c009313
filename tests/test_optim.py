from __future__ import annotations

import pytest

from conftest import TINY_MODEL
from encoderlab import config as C
from encoderlab.models import classifier
from encoderlab.train.optim import lr_factor, param_groups


def test_schedule_shapes():
    total, warm = 100, 10
    assert lr_factor(0, total, warm, "linear") == pytest.approx(0.1)
    assert lr_factor(9, total, warm, "linear") == pytest.approx(1.0)
    assert lr_factor(55, total, warm, "linear") == pytest.approx(0.5)
    assert lr_factor(55, total, warm, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, total, warm, "cosine") < 0.01
    assert lr_factor(80, total, warm, "constant") == 1.0


def test_no_decay_on_bias_and_norm_and_layer_decay():
    model, _, _ = classifier.build(C.from_dict(C.ModelConfig, TINY_MODEL), 3)
    cfg = C.TrainConfig(lr=1.0, weight_decay=0.1, layer_lr_decay=0.5)
    groups = param_groups(model, cfg)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["encoder.embeddings.LayerNorm.weight"])]["weight_decay"] == 0.0
    assert by_param[id(named["encoder.encoder.layer.0.attention.self.query.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["encoder.encoder.layer.0.attention.self.query.weight"])]["weight_decay"] == 0.1
    # 2 layers: head 1.0, layer 1 -> 0.5, layer 0 -> 0.25, embeddings -> 0.125
    assert by_param[id(named["head.net.1.weight"])]["lr"] == 1.0
    assert by_param[id(named["encoder.encoder.layer.1.output.dense.weight"])]["lr"] == 0.5
    assert by_param[id(named["encoder.encoder.layer.0.output.dense.weight"])]["lr"] == 0.25
    assert by_param[id(named["encoder.embeddings.word_embeddings.weight"])]["lr"] == 0.125
