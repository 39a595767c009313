"""The README stays true: its config reference matches the code, its two commands exist."""

from __future__ import annotations

from pathlib import Path

from encoderlab import config as C

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_documents_every_config_key_with_its_default():
    for key, _, default, _ in C.reference():
        assert f"| `{key}` |" in README, key
        assert f"| `{key}` | " in README and f"`{default}`" in README, key


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "./setup.sh && .venv/bin/encoderlab quickstart" in README
    assert "./setup.sh && .venv/bin/python -m pytest" in README
    assert "./setup.sh && .venv/bin/python -m pytest" in ci
