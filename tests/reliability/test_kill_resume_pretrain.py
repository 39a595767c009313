"""Pretraining survives the same failures as fine-tuning: a real `encoderlab pretrain` process killed
(SIGKILL mid-step or mid-checkpoint) or stopped (SIGTERM: the step finishes and is checkpointed)
resumes with `encoderlab resume` to the same final weights, bit for bit, as an uninterrupted run."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import real_rows
from encoderlab.data.corpus import read_corpus
from encoderlab.encode import vocab as V
from encoderlab.store.check import check
from encoderlab.store.runs import RunStore
from test_kill_resume import _cli


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain-kill")
    rows = [r for r in real_rows("wordnet-usage", "train", n=500) if r["label"] == "match"][:200]
    corpus = tmp / "corpus.txt"
    corpus.write_text("".join(f"{r['text_b']}\n{r['text_a']}\n\n" for r in rows))
    V.save(V.train(read_corpus(corpus), "wordpiece", vocab_size=400), tmp / "tok")
    exp = tmp / "mlm.toml"
    exp.write_text(f'''name = "mlm-kill"
[data]
source = "{corpus}"
[encode]
max_length = 32
[model]
path = "arch:bert"
init = "random"
tokenizer = "{tmp / 'tok'}"
num_layers = 1
hidden_size = 16
num_heads = 2
intermediate_size = 32
[train]
epochs = 2
batch_size = 16
lr = 2e-3
precision = "fp32"
threads = 1
eval_every_steps = 6
[pretrain]
objective = "mlm+nsp"
''')
    done = _cli(tmp / "reference", "pretrain", str(exp))
    assert done.returncode == 0, done.stderr[-2000:]
    return exp, _final(tmp / "reference")


def _final(store: Path) -> dict:
    s = RunStore(store)
    try:
        (row,) = s.list()
        run = s.get(row["id"])
        assert run.status == "completed"
        return load_file(str(run.dir / "model" / "model.safetensors"))
    finally:
        s.close()


@pytest.mark.parametrize("fault,code", [("step:8", -signal.SIGKILL), ("checkpoint:2", -signal.SIGKILL),
                                        ("step:15:TERM", 130)])
def test_killed_pretraining_resumes_to_identical_weights(fault, code, experiment, tmp_path):
    exp, reference = experiment
    store = tmp_path / "runs"
    killed = _cli(store, "pretrain", str(exp), fault=fault)
    assert killed.returncode == code, killed.stderr[-2000:]
    s = RunStore(store)
    (row,) = s.list()
    run = s.get(row["id"])
    assert run.status == "interrupted" and not check(s).corrupt
    if code == 130:
        assert int(run.checkpoints[-1].name.split("-")[1]) == 15
    s.close()
    resumed = _cli(store, "resume", row["id"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights = _final(store)
    assert weights.keys() == reference.keys()
    assert all((weights[k] == reference[k]).all() for k in weights)
