"""Every shipped experiment file (and the quickstart preset) loads and runs as a smoke run: with
`encoderlab pretrain` when its first line says so, and a fine-tuning config that starts from
`run:NAME` after a smoke run of the shipped pretraining config of that name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import TINY_MODEL
from encoderlab import config as C
from encoderlab.cli import QUICKSTART
from encoderlab.data.corpus import read_corpus
from encoderlab.encode import vocab as V
from encoderlab.train.fit import fit
from encoderlab.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples").glob("*.toml")) + [QUICKSTART]
SIZES = [f"model.{k}={v!r}".replace("'", '"') for k, v in TINY_MODEL.items() if k != "path"]
STEPS = ["train.max_steps=2", "train.epochs=1", "data.max_eval=40", "train.precision=\"fp32\"", "data.max_train=200"]
SMOKE = SIZES + STEPS
ANON = ROOT / "examples" / "data" / "anon"       # derived by scripts/anonymise_wordnet.py, not committed


@pytest.fixture(scope="module")
def anon(tmp_path_factory):
    """The pretraining demo's data and ID vocabulary, derived afresh as docs/pretraining-demo.md says."""
    spec = importlib.util.spec_from_file_location("anonymise_wordnet", ROOT / "scripts" / "anonymise_wordnet.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path_factory.mktemp("anon")
    script.derive(out)
    V.save(V.train(read_corpus(out / "corpus.txt.gz"), "ids"), out / "vocab")
    return out


def command(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# encoderlab "), "first line must be the command that runs it"
    return first.split()[2]


def load(path: Path, overrides: list[str], anon: Path) -> C.ExperimentConfig:
    """The config with examples/data/anon paths pointing at the fresh copy."""
    cfg = C.load(path, overrides)
    moved = {key: value.replace(str(ANON), str(anon)) for key, value in
             (("data__source", cfg.data.source), ("data__validation", cfg.data.validation),
              ("data__test", cfg.data.test), ("model__tokenizer", cfg.model.tokenizer)) if str(ANON) in value}
    return C.replace(cfg, **moved)


def smoke_pretrain(name: str, store, anon: Path):
    """Smoke run of the shipped pretraining config called `name` (a fine-tuning config's run:NAME)."""
    for path in CONFIGS:
        if command(path) == "pretrain" and C.load(path).name == name:
            return pretrain(load(path, SMOKE, anon), store, progress=False)
    raise AssertionError(f"no shipped `encoderlab pretrain` config is named {name!r}")


def smoke_rank(path: Path, store, seen: tuple = ()):
    """`encoderlab rank` configs; a cross-encoder reranking `run:NAME`'s top-k first gets a smoke
    run of the shipped config of that name."""
    from encoderlab.train.ranking import run as run_ranking
    cfg = C.load(path, SMOKE)
    if cfg.ranking.retriever.startswith("run:"):
        name = cfg.ranking.retriever[4:]
        match = [p for p in CONFIGS if command(p) == "rank" and C.load(p).name == name]
        assert match and path not in seen, f"no shipped `encoderlab rank` config is named {name!r}"
        smoke_rank(match[0], store, seen + (path,))
    return run_ranking(cfg, store, progress=False)


# linking configs embed the ~100k-entry dictionary of the training domains: a minute even with the
# tiny model, so they are slow tests (tests/test_ranking.py covers linking on a small dictionary)
SLOW = {"linking-bi.toml", "linking-cross.toml"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p
                                  for p in CONFIGS], ids=lambda p: p.name)
def test_shipped_config_runs_as_smoke(path, store, request):
    verb = command(path)
    assert verb in ("run", "sweep", "pretrain", "quickstart", "rank", "distill") or path == QUICKSTART
    uses_anon = "data/anon" in path.read_text()
    anon = request.getfixturevalue("anon") if uses_anon else ANON
    if verb == "rank":
        run = smoke_rank(path, store)
        assert run.status == "completed"
        return
    if verb == "distill":
        # a smoke teacher (the quickstart at tiny size), then the file over the teacher's config
        from encoderlab.train.distill import distill, student_config
        teacher = fit(C.load(QUICKSTART, SMOKE + ["name=\"teacher\""]), store, progress=False)
        run = distill(student_config(teacher, str(path), STEPS), store, progress=False)
        assert run.status == "completed" and run.info["parent"] == teacher.id
        return
    if verb == "pretrain":
        run = pretrain(load(path, SMOKE, anon), store, progress=False)
        assert run.status == "completed" and (run.dir / "model" / "tokenizer.json").exists()
        return
    model_path = C.load(path).model.path
    if model_path.startswith("run:"):
        # the architecture (and its tiny smoke size) comes from the pretraining run
        smoke_pretrain(model_path[4:], store, anon)
        run = fit(load(path, STEPS, anon), store, progress=False)
    else:
        run = fit(load(path, SMOKE, anon), store, progress=False)
    assert run.status == "completed"
