"""One way to turn padded batches into logits, whatever serves the model: PyTorch eager (fp32 or
dynamic int8) or ONNX Runtime (fp32 or int8). Bench, evaluation and predict all go through this.

A run's model folder (see `models/classifier.save`) may hold, besides the Hugging Face weights,
`model.onnx` (exported with dynamic batch/sequence axes) and `model.int8.onnx` (its onnxruntime
dynamic int8 quantization). The PyTorch int8 runtimes are computed at load time from the fp32
weights, so they need no file of their own: both quantizations are pure functions of the weights
(per-channel / per-tensor absmax scales, round to nearest), so a reload serves the same model.
Saving the quantized weights instead is not done: `safetensors.torch.save_file` fails on torchao's
int8 tensor subclasses (torchao 0.18: "invalid python storage"); `torch.save` +
`torch.load(weights_only=True)` would work, but as a second copy of the weights tied to torchao's
tensor format.

- `torch-int8`: torchao `Int8DynamicActivationInt8WeightConfig` (int8 per-channel weights, int8
  per-token activations quantized on the fly, `torch._int_mm`) on every `nn.Linear`.
- `torch-int8-legacy`: `torch.ao.quantization.quantize_dynamic` (qint8 per-tensor weights, fbgemm /
  onednn kernels). Deprecated by PyTorch (to move to torchao); kept because it is the faster of the
  two in eager mode on CPUs measured so far (README, "PyTorch int8")."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from encoderlab.config import RUNTIMES
from encoderlab.errors import ConfigError, StoreError

ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        import difflib
        close = difflib.get_close_matches(name, RUNTIMES, n=1)
        raise ConfigError(f"runtime '{name}' is not one of {', '.join(RUNTIMES)}"
                          + (f"; did you mean '{close[0]}'?" if close else ""))
    return name


def quantize_torchao(model: torch.nn.Module) -> torch.nn.Module:
    """Every nn.Linear (encoder and head) -> torchao int8 weights (per output channel) with int8
    activations quantized per token on the fly; in place, returns the model."""
    import logging
    # its import reports CUDA-only kernel libraries it cannot load and a torch.compile notice
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        raise ConfigError("runtime 'torch-int8' needs torchao: pip install -e \".[int8]\" (or serve with "
                          "'torch-int8-legacy', PyTorch's deprecated quantize_dynamic)") from None
    # set_inductor_config would change global torch.compile settings; we serve eagerly
    quantize_(model, Int8DynamicActivationInt8WeightConfig(set_inductor_config=False))
    return model


def quantize_legacy(model: torch.nn.Module) -> torch.nn.Module:
    """torch.ao.quantization.quantize_dynamic: Linear layers -> qint8 weights (per tensor), activations
    quantized on the fly. Deprecated by PyTorch in favour of torchao; returns a new model."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.ao.quantization announces its move to torchao
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


QUANTIZERS = {"torch-int8": quantize_torchao, "torch-int8-legacy": quantize_legacy}


def quantizer_of(runtime: str) -> str:
    """What a PyTorch int8 runtime quantizes with, versioned (stored with each quantized run: runs
    quantized before torchao served `torch-int8` hold no such field and were scored by quantize_dynamic)."""
    if runtime == "torch-int8":
        from importlib import metadata
        return f"torchao {metadata.version('torchao')} Int8DynamicActivationInt8WeightConfig"
    return f"torch {torch.__version__} torch.ao.quantization.quantize_dynamic"


class _Logits(torch.nn.Module):
    """The classifier as (input_ids, attention_mask[, token_type_ids]) -> logits, for export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids)["logits"]


def export_onnx(model, path: Path, pairs: bool, opset: int | None = None) -> int:
    """torch.onnx.export (the torch.export-based exporter) with dynamic batch and sequence axes;
    returns the opset written."""
    import contextlib
    import logging
    model.eval()
    ids = torch.full((2, 8), 1000, dtype=torch.long)
    mask = torch.ones_like(ids)
    args, names = (ids, mask), ["input_ids", "attention_mask"]
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    if pairs:
        args, names = args + (torch.zeros_like(ids),), names + ["token_type_ids"]
        shapes["token_type_ids"] = {0: batch, 1: seq}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)   # "torchvision is not installed" ...
    kw = {} if opset is None else {"opset_version": opset}
    import warnings
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), warnings.catch_warnings():
        warnings.simplefilter("ignore")     # progress lines and axis-renaming notes are not news
        torch.onnx.export(_Logits(model).eval(), args, str(path), input_names=names, output_names=["logits"],
                          dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False, **kw)
    import onnx
    opsets = onnx.load(str(path), load_external_data=False).opset_import
    return max(o.version for o in opsets if o.domain in ("", "ai.onnx"))


def quantize_onnx(src: Path, dst: Path) -> None:
    """onnxruntime's dynamic quantization: int8 weights of MatMul/Gemm, activations at run time."""
    import logging
    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)     # its "consider pre-processing" advice targets static (image) models
    try:
        ort_quantize(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


class Predictor:
    """Logits of padded batches (dicts of (B, T) int64 tensors) from one model artefact."""

    def __init__(self, folder: Path, runtime: str, threads: int = 0):
        from encoderlab.models import classifier
        self.folder, self.runtime = Path(folder), check_runtime(runtime)
        self.threads = threads or torch.get_num_threads()
        meta_model, self.tokenizer, self.meta = classifier.load(self.folder)
        self.num_labels = len(self.meta["labels"])
        self.parameters = sum(p.numel() for p in meta_model.parameters())
        self.session = self.model = None
        if runtime.startswith("onnx"):
            path = self.folder / ONNX_FILES[runtime]
            if not path.exists():
                raise StoreError(f"{path} does not exist; make it with `encoderlab export RUN"
                                 f"{' --int8' if runtime == 'onnx-int8' else ''}`")
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            self.input_names = {i.name for i in self.session.get_inputs()}
            self.size_bytes = path.stat().st_size
        else:
            self.model = QUANTIZERS[runtime](meta_model) if runtime in QUANTIZERS else meta_model
            self.model.eval()
            self.size_bytes = _torch_size(self.folder) if runtime == "torch" else _serialized_size(self.model)

    @torch.inference_mode()
    def logits(self, batch: dict) -> np.ndarray:
        """(B, num_labels) float32."""
        if self.session is not None:
            feed = {k: v.numpy() for k, v in batch.items() if k in self.input_names}
            return self.session.run(None, feed)[0]
        feed = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(**feed)["logits"].float().numpy()


def _torch_size(folder: Path) -> int:
    """Bytes of the weights a PyTorch user ships: encoder safetensors + head."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _serialized_size(model: torch.nn.Module) -> int:
    """Bytes of the quantized state dict as torch.save writes it (int8 weights + scales; torchao's
    tensor subclasses pickle their int8 data and scales, not a dequantized copy)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def available(folder: Path) -> list[str]:
    """Runtimes this model folder can be served with."""
    return ["torch", *QUANTIZERS] + [r for r, f in ONNX_FILES.items() if (Path(folder) / f).exists()]
