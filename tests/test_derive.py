"""Runs derived from a fine-tuned run: layer truncation (teacher's weights kept), PyTorch dynamic
int8, ONNX export with its equivalence check, and predict serving the exported artefact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from encoderlab.cost import derive
from encoderlab.cost.runtime import Predictor
from encoderlab.errors import ConfigError, StoreError


@pytest.mark.parametrize("spec, want", [("first:2", [0, 1]), ("every:2", [1, 3, 5]), ("every:3", [2, 5]),
                                        ("0,3,5", [0, 3, 5]), ("", [0, 1, 2, 3, 4, 5])])
def test_parse_layers(spec, want):
    assert derive.parse_layers(spec, 6) == want


@pytest.mark.parametrize("spec, msg", [("first:0", "keeps no layer"), ("0,6", "outside 0 .. 5"),
                                       ("3,1", "ascending"), ("top:2", "expected first:K"),
                                       ("every:0", "expected")])
def test_parse_layers_errors_name_the_key(spec, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        derive.parse_layers(spec, 6)
    assert "compress.layers" in str(e.value)


def test_truncate_keeps_the_chosen_layers_weights(tiny_teacher):
    store, teacher = tiny_teacher
    run, res = derive.truncate_run(store, teacher, "every:2")      # of 2 layers: keeps layer 1
    assert run.status == "completed" and run.info["parent"] == teacher.id
    cfg = run.config()
    assert cfg.compress.teacher == teacher.id and cfg.compress.layers == "every:2"
    assert json.loads((run.dir / "model" / "config.json").read_text())["num_hidden_layers"] == 1
    t = load_file(str(teacher.dir / "model" / "model.safetensors"))
    s = load_file(str(run.dir / "model" / "model.safetensors"))
    key = next(k for k in t if ".layer.1.attention.self.query.weight" in k)
    assert np.array_equal(s[key.replace("layer.1", "layer.0")].numpy(), t[key].numpy())
    assert not any(".layer.1." in k for k in s)
    assert run.info["test_accuracy"] == pytest.approx(res["test"]["accuracy"])
    assert {e["split"] for e in run.events()} >= {"final_validation", "test"}
    assert (run.dir / "predictions" / "test.csv").exists()


def test_quantize_serves_int8_close_to_fp32(tiny_teacher):
    """torch-int8 is torchao: every Linear of encoder and head holds int8 weights, and the tiny
    model's test labels agree with its fp32 self on >= 90 % of the 80 test glosses."""
    from torchao.quantization import Int8Tensor
    store, teacher = tiny_teacher
    run, res = derive.quantize_run(store, teacher)
    assert run.info["runtime"] == "torch-int8" and run.info["name"] == "teacher-int8"
    assert run.info["quantizer"].startswith("torchao 0.")
    int8 = Predictor(run.dir / "model", "torch-int8")
    linears = [m for m in int8.model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) >= 2 * 6 + 1                     # 2 layers x (q, k, v, out, up, down) + head
    assert all(isinstance(m.weight, Int8Tensor) and m.weight.qdata.dtype == torch.int8 for m in linears)
    fp32 = Predictor(teacher.dir / "model", "torch")
    _, enc = derive.scored_splits(run.config(), fp32.tokenizer)
    ref = derive.logits_of(fp32, enc["test"], 64, 0)
    agree = (ref.argmax(1) == res["test"]["logits"].argmax(1)).mean()
    assert agree >= 0.9
    assert not np.allclose(ref, res["test"]["logits"])       # it really is another model
    # int8 weights + scales are pickled, not a float copy (the tiny model's fp32 embeddings dominate both)
    import io
    buf = io.BytesIO()
    torch.save(fp32.model.state_dict(), buf)
    assert int8.size_bytes < buf.tell()


def test_quantized_run_reloads_to_the_same_model(tiny_teacher, two_class_csv):
    """A torch-int8 run stores fp32 weights and quantizes at load: loading it again (Predictor,
    predict) serves exactly the model it was scored with."""
    from encoderlab import predict as P
    store, teacher = tiny_teacher
    run, res = derive.quantize_run(store, teacher, name="reload-int8")
    assert not any("int8" in p.name for p in (run.dir / "model").iterdir())   # no second copy of the weights
    again = Predictor(run.dir / "model", run.info["runtime"])
    _, enc = derive.scored_splits(run.config(), again.tokenizer)
    same_batches = run.config().train.eval_batch_size          # as the run was scored: same shapes, same sums
    np.testing.assert_array_equal(derive.logits_of(again, enc["test"], same_batches, 0), res["test"]["logits"])
    frame, _ = P.predict(run, str(two_class_csv / "test.csv"))      # served as the run's own runtime
    names = run.labels()
    assert list(frame["predicted"]) == [names[i] for i in res["test"]["logits"].argmax(1)]


def test_legacy_int8_is_the_deprecated_torch_ao_path(tiny_teacher):
    store, teacher = tiny_teacher
    run, res = derive.quantize_run(store, teacher, runtime="torch-int8-legacy")
    assert run.info["runtime"] == "torch-int8-legacy" and run.info["name"] == "teacher-int8-legacy"
    assert "quantize_dynamic" in run.info["quantizer"]
    legacy = Predictor(run.dir / "model", "torch-int8-legacy")
    mods = list(legacy.model.modules())
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in mods) >= 2 * 6 + 1
    assert not any(type(m) is torch.nn.Linear for m in mods)
    assert 0.5 <= run.info["test_accuracy"] <= 1
    with pytest.raises(ConfigError, match="not one of torch-int8, torch-int8-legacy"):
        derive.quantize_run(store, teacher, runtime="onnx")


def test_cli_quantize_legacy_flag(tiny_teacher, capsys):
    from encoderlab.cli import main
    store, teacher = tiny_teacher
    assert main(["--store", str(store.root), "quantize", teacher.id, "--legacy", "--name", "cli-legacy"]) == 0
    assert "(torch-int8-legacy)" in capsys.readouterr().out
    assert store.get("cli-legacy").info["runtime"] == "torch-int8-legacy"


def test_torch_int8_without_torchao_names_the_extra(tiny_teacher, monkeypatch):
    import sys
    _, teacher = tiny_teacher
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)      # as if torchao were not installed
    with pytest.raises(ConfigError, match=r"needs torchao: pip install -e \"\.\[int8\]\"") as e:
        Predictor(teacher.dir / "model", "torch-int8")
    assert "torch-int8-legacy" in str(e.value)


def test_export_onnx_matches_pytorch_and_predict_serves_it(tiny_teacher, two_class_csv):
    from encoderlab import predict as P
    store, teacher = tiny_teacher
    run, res = derive.export_run(store, teacher, int8=True)
    check = res["equivalence"]
    assert check["label_agreement"] >= 0.995 and check["examples"] == 80 and check["max_abs_logit_diff"] < 1e-3
    assert 0.5 <= check["int8_vs_pytorch"]["label_agreement"] <= 1
    assert run.info["runtime"] == "onnx-int8" and check["opset"] >= 18
    assert (run.dir / "model" / "model.onnx").exists() and (run.dir / "model" / "model.int8.onnx").exists()
    assert json.loads((run.dir / "export.json").read_text())["label_agreement"] == check["label_agreement"]
    test = str(two_class_csv / "test.csv")
    onnx_fp32, _ = P.predict(run, test, runtime="onnx")
    torch_fp32, _ = P.predict(teacher, test, runtime="torch")
    cols = ["p_noun.animal", "p_noun.artifact"]
    np.testing.assert_allclose(onnx_fp32[cols].to_numpy(), torch_fp32[cols].to_numpy(), atol=1e-4)
    # varying batch sizes and lengths go through the one exported graph (dynamic axes)
    small, _ = P.predict(run, test, runtime="onnx", batch_size=3)
    np.testing.assert_allclose(small[cols].to_numpy(), onnx_fp32[cols].to_numpy(), atol=1e-5)


def test_onnx_runtime_without_export_is_a_clear_error(tiny_teacher):
    _, teacher = tiny_teacher
    with pytest.raises(StoreError, match="encoderlab export"):
        Predictor(teacher.dir / "model", "onnx")
    with pytest.raises(ConfigError, match="did you mean 'onnx-int8'"):
        Predictor(teacher.dir / "model", "onnx_int8")
