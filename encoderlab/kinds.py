"""Run kinds: the one table saying, for each kind of run, which recipe makes it, whether it
resumes, how `show` renders it and which verbs accept it. Verbs ask this table (`require`,
`recipe`, `view`); they do not branch on run.json strings.

Recipes and views are named "module:function" and imported on first use, so this module imports
nothing of encoderlab and any layer may ask it (the store indexes `kind_of` of every run).

A new task kind: add a row here, give `kind_of` the run.json mark its recipe writes, and every
verb below works for it (see docs/architecture.md, "Where a new task kind plugs in")."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Kind:
    name: str
    recipe: str                 # "module:function" making a run of this kind from a config
    resumes: bool               # `resume` continues it from its last checkpoint (else: run it again)
    view: str                   # "module:function" rendering it for `encoderlab show` (run, args)
    verbs: frozenset[str]       # verbs that take a run of this kind (beyond runs / show / compare)
    noun: str                   # what a verb needing this kind asks for ("classification run")
    about: str                  # why a verb refuses it, in brackets after "is a <name> run"
    instead: str                # what to do instead; {id} is the run's id
    command: str                # the command that makes one (a refused `resume` says: run it again)

    def load_recipe(self) -> Callable:
        return _load(self.recipe)

    def load_view(self) -> Callable:
        return _load(self.view)


# verbs reading a classifier from a run's final model
MODEL_VERBS = frozenset({"predict", "bench", "truncate", "distill", "quantize", "export"})
CLASSIFIER_VERBS = MODEL_VERBS | {"eval"}
ST_EXPORT = "export --format sentence-transformers"

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("classification", "encoderlab.train.fit:fit", True, "encoderlab.cli.runs:show_classification",
         CLASSIFIER_VERBS | {"resume"}, "classification",
         "single / pair / sequence task", "", "encoderlab run FILE"),
    # data.task "multilabel" / "regression": the same fit recipe with the task's head, loss and metrics
    # (encoderlab.tasks); thresholds / the target scale travel with the model
    Kind("multilabel", "encoderlab.train.fit:fit", True, "encoderlab.cli.runs:show_task",
         CLASSIFIER_VERBS | {"resume"}, "classification",
         "multi-label task", "", "encoderlab run FILE"),
    Kind("regression", "encoderlab.train.fit:fit", True, "encoderlab.cli.runs:show_task",
         CLASSIFIER_VERBS | {"resume"}, "classification",
         "regression task", "", "encoderlab run FILE"),
    # `export --format sentence-transformers` (encoderlab.cost.stexport) is the one model verb it takes
    Kind("ranking", "encoderlab.train.ranking:run", False, "encoderlab.cli.ranking:show",
         frozenset({ST_EXPORT}), "ranking",
         "ranking.mode {mode}: candidate scorers, no class head",
         'rank with `encoderlab rank FILE`; model.path = "run:{id}" fine-tunes its encoder further',
         "encoderlab rank FILE"),
    Kind("pretraining", "encoderlab.train.pretrain:pretrain", True, "encoderlab.cli.pretrain:show_pretraining",
         frozenset({"resume"}), "pretraining",
         "no classifier", 'fine-tune it with model.path = "run:{id}"', "encoderlab pretrain FILE"),
    # distilled, truncated, quantized or exported from a classification run (run.json `parent`);
    # a classifier like its parent, but made by a verb that reads the parent, so it restarts
    Kind("derived", "encoderlab.train.distill:distill", False, "encoderlab.cli.runs:show_classification",
         CLASSIFIER_VERBS, "classification",
         "derived from run {parent}", "",
         "encoderlab distill / truncate / quantize / export"),
)}


def _load(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _info(run: Any) -> dict:
    return run if isinstance(run, dict) else run.info


def kind_of(run: Any) -> str:
    """The kind of a run (a `Run`, or its run.json as a dict): the one place reading the marks
    recipes leave in run.json (`task`, `parent`)."""
    info = _info(run)
    task = info.get("task")
    if task == "pretrain":
        return "pretraining"
    if task == "ranking":
        return "ranking"
    if info.get("parent"):
        return "derived"
    if task in ("multilabel", "regression"):
        return task
    return "classification"


def get(run: Any) -> Kind:
    return KINDS[kind_of(run)]


def accepts(verb: str) -> list[str]:
    return [k.name for k in KINDS.values() if verb in k.verbs]


def refusal(run: Any, verb: str, problem: str) -> str:
    """The one wording of a refused verb: "`VERB` needs a <what> run; run ID <problem>; <instead>"."""
    nouns = list(dict.fromkeys(KINDS[k].noun for k in accepts(verb)))
    state = "an unfinished" if verb == "resume" else "a completed"
    return f"`{verb}` needs {state} {' or '.join(nouns)} run; run {run.id} {problem}"


def require(run: Any, verb: str) -> Kind:
    """Refuse (StoreError) a run `verb` does not take, before anything is created; the verbs
    reading a final classifier also need one on disk. Returns the run's kind."""
    from encoderlab.errors import StoreError
    kind = get(run)
    info = run.info
    if verb not in kind.verbs:
        mode = info.get("data", {}).get("mode") if kind.name == "ranking" else None
        if kind.name == "ranking" and not mode:
            try:
                mode = run.config().ranking.mode
            except Exception:       # an unreadable config must not hide the refusal
                mode = "ranking"
        about = kind.about.format(mode=mode, parent=info.get("parent"))
        instead = (f"{kind.name} runs restart rather than resume: run the command that made it again "
                   f"({kind.command})" if verb == "resume" else kind.instead.format(id=run.id))
        raise StoreError(refusal(run, verb, f"is a {kind.name} run ({about})")
                         + (f"; {instead}" if instead else ""))
    if verb in CLASSIFIER_VERBS:
        note = removed_note(run.dir)
        if note:
            raise StoreError(refusal(run, verb, note))
    if verb in MODEL_VERBS and not (run.dir / "model" / "encoderlab.json").exists():
        again = (f"finish it with `encoderlab resume {run.id}`" if kind.resumes
                 else f"make it again ({kind.command})")
        raise StoreError(refusal(run, verb, f"has no final classifier model (status {run.status})")
                         + f"; {again}")
    return kind


def recipe(kind: str) -> Callable:
    return KINDS[kind].load_recipe()


def view(run: Any) -> Callable:
    """The function rendering `run` for `encoderlab show`: view(run)(run, args)."""
    return get(run).load_view()


# model/REMOVED_FILE: written by `store gc --models` (store/space.py) before a run's weights are deleted
REMOVED_FILE = "weights-removed.json"


def removed_note(run_dir: Path) -> str | None:
    """Why the run has no weights any more (None: not removed): what the refusal of a verb that
    needs them says."""
    path = run_dir / "model" / REMOVED_FILE
    if not path.exists():
        return None
    try:
        note = json.loads(path.read_text())
    except (OSError, ValueError):
        note = {}
    why = note.get("reason", "not among the configurations kept")
    return (f"had its model weights removed by `encoderlab store gc --models` on {note.get('removed', '?')} "
            f"({why}); its metrics, curves and predictions are kept; to use its model, train it again")
