"""Pretraining on real WordNet text with tiny models: masking statistics, NSP/SOP pairs, the loss
falls, exact resume, the stored run fine-tunes as model.path = "run:ID", warnings fire."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import real_rows, tiny_config
from encoderlab import config as C
from encoderlab.cli import main
from encoderlab.data.corpus import read_corpus
from encoderlab.encode import vocab as V
from encoderlab.errors import ConfigError, DataError
from encoderlab.models import classifier
from encoderlab.store.runs import RunStore
from encoderlab.train import pretrain as P
from encoderlab.train.fit import fit

TINY = {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """300 real WordNet documents: a definition, then a usage example of the same sense."""
    rows = [r for r in real_rows("wordnet-usage", "train", n=700) if r["label"] == "match"][:300]
    path = tmp_path_factory.mktemp("pretrain") / "corpus.txt"
    path.write_text("".join(f"{r['text_b']}\n{r['text_a']}\n\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    V.save(V.train(read_corpus(corpus), "wordpiece", vocab_size=500), folder)
    return folder


def pretrain_config(corpus, tokenizer_dir, **overrides) -> C.ExperimentConfig:
    raw = {"name": "tiny-mlm", "data": {"source": str(corpus)}, "encode": {"max_length": 32},
           "model": {"path": "arch:bert", "init": "random", "tokenizer": str(tokenizer_dir), **TINY},
           "train": {"epochs": 3, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.1, "precision": "fp32",
                     "threads": 1},
           "pretrain": {"objective": "mlm+nsp", "heldout_fraction": 0.1}}
    for k, v in overrides.items():
        C.set_dotted(raw, k.replace("__", "."), v)
    return C.from_dict(C.ExperimentConfig, raw)


@pytest.fixture(scope="module")
def pretrained(corpus, tokenizer_dir, tmp_path_factory):
    """One completed MLM+NSP run (3 epochs), shared by the tests that only read it."""
    store = RunStore(tmp_path_factory.mktemp("runs"))
    events = []
    run = P.pretrain(pretrain_config(corpus, tokenizer_dir), store, callback=events.append, progress=False)
    return store, run, events


# -- masking and batches -------------------------------------------------------------------------

SP = P.Special(cls=2, sep=3, pad=0, mask=4, all=np.arange(5), replacements=np.arange(5, 1000))


def test_masking_statistics_80_10_10():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, size=(400, 100))
    eligible = rng.random(ids.shape) > 0.2                      # e.g. padding and special tokens
    out, labels = P.mask_tokens(ids, eligible, np.ones_like(eligible), 0.15, False, SP, rng)
    chosen = labels != -100
    assert not (chosen & ~eligible).any()
    assert (out[~chosen] == ids[~chosen]).all() and (labels[chosen] == ids[chosen]).all()
    assert chosen.sum() / eligible.sum() == pytest.approx(0.15, abs=0.005)
    masked, kept = out[chosen] == SP.mask, out[chosen] == ids[chosen]
    assert masked.mean() == pytest.approx(0.8, abs=0.01)
    assert kept.mean() == pytest.approx(0.1, abs=0.01)         # a random draw equal to the original is rare
    random = ~masked & ~kept
    assert random.mean() == pytest.approx(0.1, abs=0.01)
    assert not np.isin(out[chosen][random], SP.all).any()       # never replaced by a special token


def test_whole_word_masking_takes_every_piece_of_a_word():
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 1000, size=(300, 60))
    starts = rng.random(ids.shape) < 0.4                        # words of ~2.5 pieces
    starts[:, 0] = True
    out, labels = P.mask_tokens(ids, np.ones_like(starts), starts, 0.15, True, SP, rng)
    chosen = labels != -100
    word = np.cumsum(starts, axis=1)
    for r in range(len(ids)):
        for w in np.unique(word[r]):
            part = chosen[r][word[r] == w]
            assert part.all() or not part.any()
    assert chosen.mean() == pytest.approx(0.15, abs=0.01)


def _segments(batch, row):
    """(A ids, B ids) of one row, before masking."""
    ids = torch.where(batch["mlm_labels"] != -100, batch["mlm_labels"], batch["input_ids"])[row]
    types, attn = batch["token_type_ids"][row], batch["attention_mask"][row]
    a = ids[(types == 0) & (attn == 1)][1:-1]
    b = ids[(types == 1) & (attn == 1)][:-1]
    return a.tolist(), b.tolist()


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm+sop"])
def test_sentence_pair_labels(objective, corpus, tokenizer_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokens = P.tokenize(tok, read_corpus(corpus))
    ex = P.make_examples(tokens, pairs=True, max_length=128)
    assert (ex.second >= 0).all()                              # every document has two lines
    pc = C.PretrainConfig(objective=objective)
    batch = P.make_batch(ex, tokens, np.arange(200), pc, 128, P.special_ids(tok), np.random.default_rng(0))
    labels = batch["pair_labels"].tolist()
    assert 70 < sum(labels) < 130                               # half the pairs are negatives
    for row, label in enumerate(labels):
        a, b = _segments(batch, row)
        first, second = tokens.ids[ex.first[row]].tolist(), tokens.ids[ex.second[row]].tolist()
        if label == 0:
            assert (a, b) == (first, second)
        elif objective == "mlm+sop":
            assert (a, b) == (second, first)
        else:
            assert a == first and b != second


def test_heldout_split_keeps_documents_whole(corpus, tokenizer_dir):
    from transformers import AutoTokenizer
    tokens = P.tokenize(AutoTokenizer.from_pretrained(tokenizer_dir), read_corpus(corpus))
    ex = P.make_examples(tokens, pairs=True, max_length=64)
    train, held = P.split_heldout(ex, tokens, 0.1, seed=0)
    assert len(held) == 30 and len(train) == 270
    assert not set(tokens.doc[train.pool]) & set(tokens.doc[held.pool])


# -- the recipe ----------------------------------------------------------------------------------

def test_mlm_loss_falls_and_the_run_is_stored(pretrained):
    store, run, events = pretrained
    assert run.status == "completed" and run.info["task"] == "pretrain"
    held = [e["metrics"] for e in events if e["split"] == "heldout"]
    train = [e["metrics"] for e in events if e["split"] == "pretrain"]
    assert len(held) == 3 and held[-1]["mlm_loss"] < held[0]["mlm_loss"]
    assert train[-1]["mlm_loss"] < train[0]["mlm_loss"] - 0.25
    assert {"mlm_accuracy", "pair_accuracy", "top1_share", "perplexity"} <= set(held[-1])
    assert run.info["best_metric"] == "mlm_loss"
    data = run.info["data"]
    assert data["sizes"] == {"train": 270, "heldout": 30} and data["unigram_entropy"] > 3
    from transformers import AutoModel, AutoTokenizer
    model = AutoModel.from_pretrained(run.dir / "model")
    tok = AutoTokenizer.from_pretrained(run.dir / "model")
    assert model.config.model_type == "bert" and model.config.hidden_size == 32 and len(tok) == 500
    assert json.loads((run.dir / "model" / "pretrain.json").read_text())["objective"] == "mlm+nsp"
    # the index has the held-out metrics (compare / reports read them from the store)
    names = {m["name"] for m in store.metrics(run.id, split="final_heldout")}
    assert {"mlm_loss", "mlm_accuracy", "pair_accuracy"} <= names


def test_mlm_loss_falls_below_the_unigram_plateau_on_a_tiny_corpus(corpus, tokenizer_dir, tmp_path):
    """40 documents seen 40 times: only a model that uses the context beats token frequencies."""
    small = tmp_path / "small.txt"
    small.write_text("\n\n".join(corpus.read_text().split("\n\n")[:40]) + "\n")
    cfg = pretrain_config(small, tokenizer_dir, pretrain__objective="mlm", pretrain__mask_rate=0.4,
                          model__hidden_size=64, model__intermediate_size=128, model__dropout=0.0,
                          train__epochs=40, train__batch_size=8)
    events = []
    run = P.pretrain(cfg, RunStore(tmp_path / "runs"), callback=events.append, progress=False)
    train = [e["metrics"]["mlm_loss"] for e in events if e["split"] == "pretrain"]
    assert train[-1] < 0.8 * run.info["data"]["unigram_entropy"] < train[0]


def test_pretrained_run_fine_tunes_as_run_id_with_an_mlp_head(pretrained, two_class_csv):
    store, run, _ = pretrained
    from transformers import AutoModel
    saved = AutoModel.from_pretrained(run.dir / "model").state_dict()
    for ref in (f"run:{run.id}", "run:tiny-mlm"):             # by id, or by name (newest completed)
        model, tok, _ = classifier.build(C.ModelConfig(path=ref), 2, store_root=store.root)
        got = model.encoder.state_dict()
        assert all(torch.equal(got[k], saved[k]) for k in got)
        assert len(tok) == 500
    fresh, _, _ = classifier.build(C.ModelConfig(path=f"run:{run.id}", init="random"), 2, store_root=store.root)
    assert sum(p.numel() for p in fresh.encoder.parameters()) == sum(p.numel() for p in model.encoder.parameters())
    emb = fresh.encoder.embeddings.word_embeddings.weight
    assert not torch.equal(emb, model.encoder.embeddings.word_embeddings.weight)
    cfg = tiny_config(two_class_csv, model={"path": f"run:{run.id}", "head": {"type": "mlp", "hidden": 2048}},
                      train__epochs=1, train__lr=1e-3)
    done = fit(cfg, store, progress=False)
    assert done.status == "completed" and done.info["model_source"] == str((run.dir / "model").resolve())
    assert load_file(str(done.dir / "model" / "head.safetensors"))["net.1.weight"].shape == (2048, 32)


def test_interrupted_pretraining_resumes_to_the_same_weights(corpus, tokenizer_dir, tmp_path):
    cfg = pretrain_config(corpus, tokenizer_dir, train__epochs=2, train__save_every_steps=5)
    straight = P.pretrain(cfg, RunStore(tmp_path / "a"), progress=False)

    store = RunStore(tmp_path / "b")

    def boom(ev):
        if ev["split"] == "heldout" and ev["epoch"] == 2.0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        P.pretrain(cfg, store, callback=boom, progress=False)
    run = store.get("last")
    assert run.status == "interrupted"
    assert [p.name for p in run.checkpoints][-1] == "step-30"   # mid-epoch 2 (17 steps per epoch)
    resumed = P.pretrain(cfg, store, resume=run, progress=False)
    assert resumed.status == "completed"
    a = load_file(str(straight.dir / "model" / "model.safetensors"))
    b = load_file(str(resumed.dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    from encoderlab.analysis.tables import pretrain_table
    assert [r["mlm_loss"] for r in pretrain_table(straight)] == [r["mlm_loss"] for r in pretrain_table(resumed)]


def test_albert_with_sentence_order_prediction(corpus, tokenizer_dir, tmp_path):
    cfg = pretrain_config(corpus, tokenizer_dir, model__path="arch:albert", pretrain__objective="mlm+sop",
                          pretrain__whole_word_masking=True, train__epochs=1, train__eval_every_steps=5)
    events = []
    run = P.pretrain(cfg, RunStore(tmp_path), callback=events.append, progress=False)
    assert [e["step"] for e in events if e["split"] == "heldout"] == [5, 10, 15, 17]
    final = [e for e in events if e["split"] == "final_heldout"][0]
    assert 0 <= final["metrics"]["pair_accuracy"] <= 1 and final["detail"]["pairs"] == 30
    from transformers import AutoModel
    assert AutoModel.from_pretrained(run.dir / "model").config.model_type == "albert"


def test_mlm_only_on_a_table_with_pair_swap(tmp_path, tokenizer_dir):
    rows = [r for r in real_rows("wordnet-usage", "train", n=200)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"usage": r["text_a"], "gloss": r["text_b"]}) + "\n" for r in rows))
    cfg = pretrain_config(path, tokenizer_dir, data__text="usage", data__text_pair="gloss",
                          pretrain__objective="mlm", pretrain__pair_swap=0.5, train__max_steps=3)
    run = P.pretrain(cfg, RunStore(tmp_path / "runs"), progress=False)
    assert run.info["data"]["pairs"]["train"] == run.info["data"]["sizes"]["train"]
    assert "pair_accuracy" not in [e for e in run.events() if e["split"] == "final_heldout"][0]["metrics"]


# -- warnings ------------------------------------------------------------------------------------

def test_duplicate_lines_warn(corpus, tokenizer_dir, tmp_path):
    lines = [line for line in corpus.read_text().splitlines() if line][:40]
    dup = tmp_path / "dup.txt"
    dup.write_text("\n\n".join(lines * 5) + "\n")
    events = []
    P.pretrain(pretrain_config(dup, tokenizer_dir, train__max_steps=1, pretrain__objective="mlm"),
               RunStore(tmp_path / "runs"), callback=events.append, progress=False)
    warnings = [e["detail"] for e in events if e["split"] == "warning"]
    assert warnings[0]["code"] == "duplicate_lines" and "80% of the 200 lines" in warnings[0]["evidence"]


def test_collapsed_model_and_unigram_plateau_warn(corpus, tokenizer_dir):
    s = P.setup(pretrain_config(corpus, tokenizer_dir))
    _, mlm_head, _ = s.model.parts()
    with torch.no_grad():
        mlm_head.bias.zero_()
        mlm_head.bias[42] = 100.0                                # token 42 wins every position
    metrics, detail = P.evaluate(s, s.heldout)
    assert metrics["top1_share"] == 1.0 and detail["top1_token"] == s.tokenizer.convert_ids_to_tokens(42)
    codes = [w["code"] for w in P.model_warnings(metrics, detail, s.summary)]
    assert codes == ["unigram_plateau", "one_token_everywhere"]
    healthy = {**metrics, "mlm_loss": 0.5 * s.summary["unigram_entropy"], "top1_share": 0.08}
    assert P.model_warnings(healthy, {**detail, "top1_target_share": 0.05}, s.summary) == []


def test_bad_pretraining_setups_are_clear_errors(corpus, tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match="has no tokenizer; set model.tokenizer"):
        P.setup(pretrain_config(corpus, tokenizer_dir, model__tokenizer=""))
    with pytest.raises(ConfigError, match='set model.init = "random"'):
        P.setup(pretrain_config(corpus, tokenizer_dir, model__init="pretrained"))
    with pytest.raises(ConfigError, match="pair_swap is an augmentation for objective 'mlm'"):
        P.setup(pretrain_config(corpus, tokenizer_dir, pretrain__pair_swap=0.5))
    singles = tmp_path / "singles.csv"
    singles.write_text("text\n" + "\n".join(f"sentence number {i}" for i in range(50)) + "\n")
    with pytest.raises(ConfigError, match="'mlm\\+nsp' needs sentence pairs"):
        P.setup(pretrain_config(singles, tokenizer_dir))
    with pytest.raises(DataError, match="column 'sentence' not found"):
        P.setup(pretrain_config(singles, tokenizer_dir, data__text="sentence"))
    # an ID vocabulary that refuses unknown IDs names the corpus line holding one
    ids = tmp_path / "ids.txt"
    ids.write_text("1 2 3\n4 5 6\n\n1 2 7\n")
    V.save(V.train(read_corpus(ids), "ids", min_frequency=1, unknown_ids="error"), tmp_path / "vocab")
    ids.write_text("1 2 3\n4 5 6\n\n1 2 99\n")
    with pytest.raises(DataError, match=r"ids.txt, row 4: ID '99'"):
        P.setup(pretrain_config(ids, tmp_path / "vocab"))


def test_cli_pretrain_show_resume_predict(corpus, tokenizer_dir, tmp_path, capsys):
    exp = tmp_path / "mlm.toml"
    exp.write_text(f'''# encoderlab pretrain mlm.toml
name = "cli-mlm"
[data]
source = "{corpus}"
[encode]
max_length = 32
[model]
path = "arch:bert"
init = "random"
tokenizer = "{tokenizer_dir}"
num_layers = 1
hidden_size = 16
num_heads = 2
intermediate_size = 32
[train]
epochs = 1
batch_size = 32
lr = 2e-3
precision = "fp32"
[pretrain]
objective = "mlm+nsp"
''')
    store = str(tmp_path / "runs")
    assert main(["--store", store, "pretrain", str(exp), "train.threads=1"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1.00 step 9: held-out MLM loss" in out and "masked-token acc" in out and "pair acc" in out
    assert "unigram entropy of the corpus" in out and "fine-tune it: encoderlab run exp.toml model.path=run:" in out
    assert main(["--store", store, "show", "cli-mlm"]) == 0
    shown = capsys.readouterr().out
    assert "pretraining run" in shown and "600 lines in 300 documents" in shown and "held-out MLM loss" in shown
    assert main(["--store", store, "resume", "cli-mlm"]) == 0
    assert "already completed" in capsys.readouterr().out
    assert main(["--store", store, "predict", "cli-mlm", str(corpus)]) == 2
    assert 'is a pretraining run (no classifier); fine-tune it with model.path = "run:' in capsys.readouterr().err
    for verb in (["eval", "cli-mlm"], ["quantize", "cli-mlm"], ["bench", "cli-mlm"]):
        assert main(["--store", store, *verb]) == 2, verb
        assert "classifi" in capsys.readouterr().err        # names what these verbs need


def test_continued_pretraining_starts_from_the_checkpoint(corpus, tmp_path):
    """model.init = pretrained continues a public checkpoint (its own tokenizer, new MLM/NSP heads)."""
    cfg = pretrain_config(corpus, "", model={"path": "builtin:minilm-l6", "init": "pretrained", "num_layers": 1},
                          train__max_steps=1, train__lr=1e-9, data__max_train=16, data__max_eval=8)
    s = P.setup(cfg)
    ref, _, _ = classifier.build(C.ModelConfig(num_layers=1), 2)
    base, _, _ = s.model.parts()
    assert torch.equal(base.embeddings.word_embeddings.weight, ref.encoder.embeddings.word_embeddings.weight)
    assert len(s.tokenizer) == 30522 and s.summary["sizes"] == {"train": 16, "heldout": 8}
    run = P.pretrain(cfg, RunStore(tmp_path), progress=False)
    assert run.status == "completed" and run.info["model_source"] == "builtin:minilm-l6"
