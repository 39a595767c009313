"""The architecture is enforced: the import layers of pyproject.toml hold (`lint-imports`), ruff finds
nothing, and no module reaches into another module's private (underscore) names."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "encoderlab"

# private names still imported across modules, as (importing module, imported module, name); to be emptied
ALLOWED_PRIVATE: set[tuple[str, str, str]] = set()


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name      # the venv's own console script
    assert exe.exists(), f"{name} is not installed: pip install -e '.[test]'"
    return str(exe)


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_import_layers_hold():
    done = _run([_tool("lint-imports"), "--no-cache", "--no-logo"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_top_level_module_has_a_layer():
    contract = next(c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
                    ["contracts"] if c["id"] == "layers")
    placed = {m.strip() for layer in contract["layers"] for m in layer.split("|")}
    modules = {f"encoderlab.{p.stem if p.suffix else p.name}" for p in PACKAGE.iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert modules - placed == set(), "place these in [tool.importlinter] layers"


def test_ruff_finds_nothing():
    done = _run([_tool("ruff"), "check", "encoderlab", "tests", "bench"])
    assert done.returncode == 0, done.stdout + done.stderr


def _module_name(path: Path, root: Path = ROOT) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + is_package]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(path: Path, modules: set[str], root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(this module, other module, name) for `from other import _name` and `other._name` where
    `other` is an encoderlab module imported here."""
    me = _module_name(path, root)
    tree = ast.parse(path.read_text())
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("encoderlab"):
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(me, node, path.name == "__init__.py")
            if source.split(".")[0] != "encoderlab":
                continue
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append((me, source, a.name))
                if f"{source}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{source}.{a.name}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")
                and aliases[node.value.id] != me):
            found.append((me, aliases[node.value.id], node.attr))
    return found


def test_no_module_imports_a_private_name_of_another():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    found = {hit for f in files for hit in private_imports(f, modules) if hit[0] != hit[1]}
    assert sorted(found - ALLOWED_PRIVATE) == [], "make these names public (no leading underscore)"
    assert sorted(ALLOWED_PRIVATE - found) == [], "no longer imported: drop them from ALLOWED_PRIVATE"


def test_the_private_import_check_sees_both_forms(tmp_path):
    pkg = tmp_path / "encoderlab"
    pkg.mkdir()
    (pkg / "a.py").write_text("from encoderlab.b import _hidden, shown\nfrom encoderlab import b as B\nB._other()\n")
    hits = private_imports(pkg / "a.py", {"encoderlab.a", "encoderlab.b"}, root=tmp_path)
    assert {(h[1], h[2]) for h in hits} == {("encoderlab.b", "_hidden"), ("encoderlab.b", "_other")}
