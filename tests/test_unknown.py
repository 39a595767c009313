"""Vocabulary coverage: [UNK] counts, the data summary, the `unknown_tokens` diagnostic and
`encode.add_tokens` (tiny models on slices of the real builtin iso-langid / WordNet data)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import real_rows, tiny_config
from encoderlab import config as C
from encoderlab.analysis import diagnose
from encoderlab.encode import unknown as U
from encoderlab.errors import ConfigError
from encoderlab.train.fit import fit

# a Latin, a Cyrillic and two scripts MiniLM's vocabulary lacks entirely (Thai, Khmer)
LOCALES = {"fr", "ru", "th", "km"}


def hand_tokenizer():
    """WordPiece over a 9-token vocabulary: 'cat', 'dog', 'a', 'b', '##b'."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from encoderlab.encode import vocab as V
    words = list(V.SPECIALS) + ["cat", "dog", "a", "b", "##b"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    V.add_cls_sep_template(tok)
    return V.wrap(tok, "wordpiece", 64, None)


def test_counts_on_a_hand_made_tokenizer():
    tok = hand_tokenizer()
    texts = ["cat abb", "xyz", "dog xyz qa", "cat"]
    ids = [tok(t)["input_ids"] for t in texts]        # [CLS] ... [SEP]: special tokens do not count
    import numpy as np
    cov = U.coverage(tok, [np.asarray(x) for x in ids])
    # tokens: cat a ##b ##b | [UNK] | dog [UNK] [UNK] | cat  -> 9 tokens, 3 [UNK], one all-[UNK] example
    assert (cov["tokens"], cov["unknown"], cov["all_unknown"], cov["examples"]) == (9, 3, 1, 4)
    assert cov["unk_share"] == pytest.approx(3 / 9) and cov["all_unk_share"] == pytest.approx(0.25)
    assert U.unknown_spans(tok, texts) == ["xyz", "xyz", "qa"]
    assert U.unknown_units(tok, texts, "word") == {"xyz": 2, "qa": 1}
    # 'a' is known alone, so only x, y, z, q are unknown characters
    chars = U.unknown_units(tok, texts, "char")
    assert chars == {"x": 2, "y": 2, "z": 2, "q": 1}
    assert U.top(chars, 2) == ["x", "y"]                 # ties in a fixed order
    assert U.tokens_to_cover(chars, 0.95) == 4 and U.tokens_to_cover(chars, 0.5) == 2
    assert U.tokens_to_cover({}, 0.95) == 0
    with pytest.raises(ConfigError, match="add_tokens_unit"):
        U.unknown_units(tok, texts, "byte")


def test_coverage_with_empty_examples_anywhere():
    """Empty examples (first, between, last) count as examples with no tokens, not as all-[UNK]."""
    import numpy as np
    tok = hand_tokenizer()
    empty = np.zeros(0, dtype=np.int64)
    ids = [empty] + [np.asarray(tok(t)["input_ids"]) for t in ("xyz", "cat")] + [empty, empty]
    cov = U.coverage(tok, ids)
    assert (cov["tokens"], cov["unknown"], cov["all_unknown"], cov["examples"]) == (2, 1, 1, 5)
    assert U.coverage(tok, [empty])["tokens"] == 0 and U.coverage(tok, [])["examples"] == 0


def test_add_tokens_extends_tokenizer_and_embeddings():
    import torch
    tok = hand_tokenizer()
    emb = torch.nn.Embedding(len(tok), 4)
    encoder = torch.nn.Module()
    encoder.get_input_embeddings = lambda: emb

    def resize(n, mean_resizing=False):
        nonlocal emb
        new = torch.nn.Embedding(n, 4)
        new.weight.data[:emb.num_embeddings] = emb.weight.data
        emb = new
    encoder.resize_token_embeddings = resize
    old = emb.weight.detach().clone()
    done = U.add_tokens(tok, encoder, ["x", "abb", "cat"])      # 'cat' is known: not added again
    assert done == {"added": 2, "from_pieces": 1} and len(tok) == 12 == emb.num_embeddings
    ab = [tok.convert_tokens_to_ids(p) for p in ("a", "##b")]
    w = emb.weight.detach()
    # 'abb' = a ##b ##b: the mean of its pieces; 'x' has no known pieces: the mean of all old rows
    assert torch.allclose(w[tok.convert_tokens_to_ids("abb")], old[[ab[0], ab[1], ab[1]]].mean(0))
    assert torch.allclose(w[tok.convert_tokens_to_ids("x")], old.mean(0))
    assert tok.unk_token_id not in tok("x xyz")["input_ids"][1:2]


@pytest.fixture(scope="module")
def iso_csv(tmp_path_factory):
    """Real iso-langid rows of four locales (Latin, Cyrillic, Thai, Khmer) as csv splits."""
    folder = tmp_path_factory.mktemp("iso")
    for split, n in (("train", 240), ("validation", 60), ("test", 60)):
        rows = real_rows("iso-langid", split, LOCALES, n)
        pd.DataFrame({"gloss": [r["text"] for r in rows], "category": [r["label"] for r in rows]}) \
            .to_csv(folder / f"{split}.csv", index=False)
    return folder


def test_summary_on_the_real_builtin_slice():
    from encoderlab.models.classifier import prepare
    from encoderlab.encode.text import encode_split
    from encoderlab.data.columns import Split
    import numpy as np
    _, _, tok = prepare(C.ModelConfig())
    rows = {loc: real_rows("iso-langid", "train", {loc}, 40) for loc in LOCALES}
    enc = {loc: encode_split(tok, Split(loc, [r["text"] for r in rs], None, np.zeros(len(rs), dtype=np.int64)),
                             64, "longest_first").ids for loc, rs in rows.items()}
    texts = [r["text"] for rs in rows.values() for r in rs]
    s = U.summary(tok, enc, texts)
    # MiniLM's uncased English vocabulary spells French and Russian, but no Khmer at all
    assert s["splits"]["fr"]["unk_share"] == 0 and s["splits"]["ru"]["unk_share"] < 0.02
    assert s["splits"]["km"]["all_unk_share"] > 0.9 and s["splits"]["th"]["unk_share"] > 0.3
    chars = s["train_chars"]
    assert chars["distinct"] > 40 and 0 < chars["to_cover"] <= chars["distinct"]
    top = [u for u, _ in chars["top"]]
    assert all(0x0E00 <= ord(c) <= 0x0E7F or 0x1780 <= ord(c) <= 0x17FF for c in top)   # Thai, Khmer
    assert s["train_words"]["occurrences"] == sum(v["unknown"] for v in s["splits"].values())
    # uncased: Georgian capital Ⴀ and small ⴀ are one unit (an added 'Ⴀ' would never be matched)
    assert U.unknown_units(tok, ["Ⴀbc ⴀbc"], "char") == {"ⴀ": 2}
    assert U.unknown_units(tok, ["Ⴀbc ⴀbc"], "word") == {"ⴀbc": 2}


@pytest.fixture(scope="module")
def iso_runs(iso_csv, tmp_path_factory):
    from encoderlab.store.runs import RunStore
    store = RunStore(tmp_path_factory.mktemp("iso-runs") / "runs")
    plain = fit(tiny_config(iso_csv, name="plain", train__epochs=1), store, progress=False)
    n = plain.info["data"]["vocabulary"]["train_chars"]["to_cover"]
    added = fit(tiny_config(iso_csv, name="added", train__epochs=1, encode__add_tokens=n), store, progress=False)
    yield store, plain, added, n
    store.close()


def test_diagnostic_fires_on_a_real_run_and_names_n(iso_runs):
    _, plain, _, n = iso_runs
    found = {f.code: f for f in diagnose.diagnose(plain)}
    assert "unknown_tokens" in found and found["unknown_tokens"].severity == "warning"
    assert f"encode.add_tokens = {n} " in found["unknown_tokens"].fix
    assert "encoderlab tokenizer train" in found["unknown_tokens"].fix
    # the data event carries the summary the CLI prints at the start of the run
    ev = next(e for e in plain.events() if e["split"] == "data")
    assert ev["metrics"]["unk_share"] == plain.info["data"]["vocabulary"]["splits"]["train"]["unk_share"] > 0.05


def test_diagnostic_silent_on_wordnet_lexname(tiny_teacher):
    _, run = tiny_teacher
    vocab = run.info["data"]["vocabulary"]
    assert vocab["splits"]["train"]["unk_share"] < 0.01
    assert "unknown_tokens" not in {f.code for f in diagnose.diagnose(run)}


def test_add_tokens_resizes_covers_and_predicts_from_the_saved_run(iso_runs, iso_csv):
    from encoderlab import predict as P
    from encoderlab.models.classifier import load
    _, plain, added, n = iso_runs
    before = plain.info["data"]["vocabulary"]["splits"]
    after = added.info["data"]["vocabulary"]
    assert after["added"]["added"] == n and after["added"]["covered_share"] >= 0.95
    for split in ("train", "validation", "test"):
        assert after["splits"][split]["unk_share"] < before[split]["unk_share"] / 3
    assert after["splits"]["train"]["all_unk_share"] < 0.01
    assert "unknown_tokens" not in {f.code for f in diagnose.diagnose(added)}
    model, tok, _ = load(added.dir / "model")
    assert len(tok) == 30522 + n == model.encoder.get_input_embeddings().num_embeddings
    out, scores = P.predict(added, str(iso_csv / "test.csv"), text="gloss")
    assert len(out) == 60 and set(out["predicted"]) <= LOCALES and 0 <= scores["accuracy"] <= 1


def test_hash_of_configs_without_add_tokens_is_unchanged():
    # hashes from before encode.add_tokens existed: stored runs keep matching their sweep points
    assert C.config_hash(C.ExperimentConfig()) == "c69478402b17c281"
    assert C.config_hash(C.load("examples/pre-vs-npre.toml")) == "f07f569f5c5b8330"
    cfg = C.from_dict(C.ExperimentConfig, {"encode": {"add_tokens": 10}})
    assert C.config_hash(cfg) != "c69478402b17c281"
    assert C.config_hash(C.replace(cfg, encode__add_tokens_unit="word")) != C.config_hash(cfg)


def test_bad_values_and_refusals(two_class_csv, store, tmp_path):
    with pytest.raises(ConfigError, match="encode.add_tokens: -1 is out of range"):
        C.from_dict(C.ExperimentConfig, {"encode": {"add_tokens": -1}})
    with pytest.raises(ConfigError, match="add_tokens_unit: 'byte' is not one of"):
        C.from_dict(C.ExperimentConfig, {"encode": {"add_tokens_unit": "byte"}})
    cfg = tiny_config(two_class_csv, encode__add_tokens=5)
    from encoderlab.train.pretrain import pretrain
    from encoderlab.train.ranking import run as rank
    from encoderlab.train.distill import distill
    for recipe, words in ((pretrain, "pretraining learns"), (rank, "ranking run"), (distill, "teacher's tokenizer")):
        with pytest.raises(ConfigError, match=words):
            recipe(cfg, store, progress=False)
    with pytest.raises(ConfigError, match="numeric series"):
        fit(C.replace(cfg, data__source="builtin:basic-motions", data__validation="", data__test="",
                      data__text="x", data__label="y"),
            store, progress=False)
    from encoderlab.data.corpus import read_corpus
    from encoderlab.encode import vocab as V
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(" ".join(str((i * j) % 50) for j in range(8)) for i in range(200)) + "\n")
    folder = V.save(V.train(read_corpus(str(ids)), "ids", min_frequency=1), tmp_path / "ids-tok")
    with pytest.raises(ConfigError, match="ID vocabulary"):
        fit(C.replace(cfg, model__tokenizer=str(folder)), store, progress=False)
    assert store.list() == []           # refused before any run was created


@pytest.mark.skipif(not Path("/usr/share/locale/th/LC_MESSAGES/iso_3166-1.mo").exists(), reason="needs iso-codes")
def test_derive_isocodes_reproduces_the_committed_files(tmp_path):
    import shutil
    import subprocess
    import sys
    from encoderlab.data import builtin
    shutil.copy(builtin.ROOT / "manifest.json", tmp_path / "manifest.json")
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "derive_isocodes.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("iso-langid/train.jsonl.gz", "iso-langid/validation.jsonl.gz", "iso-langid/test.jsonl.gz",
                 "manifest.json", "README-iso-langid.md", "LICENSE-iso-codes.txt"):
        assert (tmp_path / name).read_bytes() == (builtin.ROOT / name).read_bytes(), name
