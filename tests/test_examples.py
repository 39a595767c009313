"""Every shipped experiment file (and the quickstart preset) loads and runs as a smoke run."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY_MODEL
from encoderlab import config as C
from encoderlab.cli import QUICKSTART
from encoderlab.train.fit import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples").glob("*.toml")) + [QUICKSTART]
SMOKE = [f"model.{k}={v!r}".replace("'", '"') for k, v in TINY_MODEL.items() if k != "path"] + [
    "train.max_steps=2", "train.epochs=1", "data.max_eval=40", "train.precision=\"fp32\""]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_runs_as_smoke(path, store):
    text = path.read_text()
    assert "encoderlab " in text.splitlines()[0], "first line must be the command that runs it"
    cfg = C.load(path, SMOKE + ["data.max_train=200"])
    run = fit(cfg, store, progress=False)
    assert run.status == "completed"
