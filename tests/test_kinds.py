"""The run-kind table: every row's recipe and view load, kind_of reads run.json in one place,
and require() refuses with one message shape."""

from __future__ import annotations

import pytest

from encoderlab import config as C
from encoderlab import kinds
from encoderlab.errors import StoreError


@pytest.mark.parametrize("name", list(kinds.KINDS))
def test_every_kind_names_a_loadable_recipe_and_view(name):
    kind = kinds.KINDS[name]
    assert callable(kind.load_recipe()) and callable(kind.load_view())
    assert kind.noun and kind.command


@pytest.mark.parametrize("info, kind", [
    ({"task": "single"}, "classification"), ({"task": "pair"}, "classification"),
    ({"task": "sequence"}, "classification"), ({}, "classification"),
    ({"task": "ranking"}, "ranking"), ({"task": "pretrain"}, "pretraining"),
    ({"task": "single", "parent": "teacher-id"}, "derived"),
])
def test_kind_of_run_json(info, kind):
    assert kinds.kind_of(info) == kind


def _run(store, **fields):
    return store.create(C.from_dict(C.ExperimentConfig, {"name": "k"}), [], **fields)


@pytest.mark.parametrize("fields, verb, words", [
    ({"task": "ranking", "data": {"mode": "bi"}}, "predict", ["is a ranking run (ranking.mode bi", "encoderlab rank"]),
    ({"task": "ranking"}, "eval", ["is a ranking run (ranking.mode cross"]),       # mode from the config
    ({"task": "pretrain"}, "quantize", ['is a pretraining run (no classifier); fine-tune it with model.path = "run:']),
    ({"task": "ranking"}, "resume", ["needs an unfinished classification or pretraining run",
                                     "restart rather than resume", "encoderlab rank FILE"]),
    ({"task": "single", "parent": "P"}, "resume", ["is a derived run (derived from run P)", "restart"]),
    ({"task": "single"}, "bench", ["has no final classifier model (status running)", "encoderlab resume"]),
])
def test_require_refuses_with_one_message_shape(store, fields, verb, words):
    run = _run(store, **fields)
    with pytest.raises(StoreError) as e:
        kinds.require(run, verb)
    message = str(e.value)
    assert message.startswith(f"`{verb}` needs ") and f"; run {run.id} " in message
    for w in words:
        assert w in message, (w, message)


def test_require_passes_the_kinds_a_verb_takes(store):
    assert kinds.require(_run(store, task="pretrain"), "resume").name == "pretraining"
    assert kinds.require(_run(store, task="single", parent="P"), "eval").name == "derived"
    assert kinds.accepts("resume") == ["classification", "multilabel", "regression", "pretraining"]
    assert kinds.require(_run(store, task="multilabel"), "resume").name == "multilabel"
    assert kinds.kind_of({"task": "regression"}) == "regression"
    assert kinds.kind_of({"task": "regression", "parent": "P"}) == "derived"
