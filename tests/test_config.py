"""Experiment config: defaults, TOML files, dotted overrides, error messages, round trips."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from encoderlab import config as C
from encoderlab.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        C.load(*args, **kwargs)
    return str(e.value)


# --- loading ---------------------------------------------------------------------------------

def test_defaults_load():
    cfg = C.load()
    assert cfg == C.ExperimentConfig()
    assert cfg.data.source == "builtin:wordnet-lexname"
    assert cfg.train.lr == 5e-5 and isinstance(cfg.train.lr, float)
    assert cfg.model.head.type == "linear"
    assert cfg.data.labels == ()


def test_toml_with_nested_tables(tmp_path):
    f = write(tmp_path / "exp.toml", """
name = "nested"
group = "g1"

[data]
source = "builtin:wordnet-usage"
labels = ["match", "other_sense"]
max_train = 500

[model]
init = "random"
num_layers = 2

[model.head]
type = "mlp"
hidden = 64

[train]
lr = 3e-4
bucket = false
""")
    cfg = C.load(f)
    assert cfg.name == "nested" and cfg.group == "g1"
    assert cfg.data.source == "builtin:wordnet-usage"
    assert cfg.data.labels == ("match", "other_sense")
    assert cfg.data.max_train == 500
    assert cfg.model.init == "random" and cfg.model.num_layers == 2
    assert cfg.model.head == C.HeadConfig(type="mlp", hidden=64)
    assert cfg.train.lr == 3e-4 and cfg.train.bucket is False
    # untouched keys keep their defaults
    assert cfg.train.epochs == C.TrainConfig().epochs
    assert cfg.encode == C.EncodeConfig()


def test_overrides_apply_on_top_of_file(tmp_path):
    f = write(tmp_path / "exp.toml", "[train]\nlr = 1e-3\nepochs = 7\n")
    cfg = C.load(f, ["train.lr=2e-5", "model.init=random", "model.head.type=mlp",
                     'data.labels=["a","b"]', "name=my-run", "train.bucket=false"])
    assert cfg.train.lr == 2e-5
    assert cfg.train.epochs == 7  # from the file
    assert cfg.model.init == "random"
    assert cfg.model.head.type == "mlp"
    assert cfg.data.labels == ("a", "b")
    assert cfg.name == "my-run"
    assert cfg.train.bucket is False


@pytest.mark.parametrize("text, key, value", [
    ("train.lr=2e-5", "train.lr", 2e-5),
    ("train.epochs = 4", "train.epochs", 4),
    ("model.init=random", "model.init", "random"),           # bare word -> string
    ("data.source=data/train.csv", "data.source", "data/train.csv"),
    ("name=two words", "name", "two words"),
    ('name="quoted"', "name", "quoted"),
    ("data.labels=[\"a\", \"b\"]", "data.labels", ["a", "b"]),
    ("train.bucket=true", "train.bucket", True),
    ("data.validation=", "data.validation", ""),
    ("x=a=b", "x", "a=b"),                                   # only the first '=' splits
])
def test_parse_override(text, key, value):
    k, v = C.parse_override(text)
    assert (k, v) == (key, value)
    assert type(v) is type(value)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match=r"train\.lr.*key=value"):
        C.load(None, ["train.lr"])


def test_ints_accepted_for_floats():
    cfg = C.load(None, ["train.lr=1", "train.weight_decay=0"])
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert type(cfg.train.weight_decay) is float


@pytest.mark.parametrize("override, key, expected", [
    ("train.bucket=1", "train.bucket", "true/false"),
    ("train.freeze_embeddings=0", "train.freeze_embeddings", "true/false"),
    ("train.epochs=true", "train.epochs", "integer"),
    ("train.lr=false", "train.lr", "number"),
    ("train.epochs=2.5", "train.epochs", "integer"),
    ("train.epochs=three", "train.epochs", "integer"),
    ("name=3", "name", "string"),
    ("data.labels=a", "data.labels", "list"),
    ("data.labels=[1, 2]", "data.labels[0]", "string"),
])
def test_wrong_type_names_key_and_expected_type(override, key, expected):
    msg = config_error(None, [override])
    assert msg.startswith(f"{key}:"), msg
    assert expected in msg


def test_wrong_type_in_file_names_file_and_key(tmp_path):
    f = write(tmp_path / "exp.toml", "[train]\nepochs = \"3\"\n")
    msg = config_error(f)
    assert str(f) in msg and "train.epochs" in msg and "integer" in msg


# --- unknown keys ----------------------------------------------------------------------------

def test_unknown_leaf_key_without_close_match_lists_valid_keys():
    # difflib finds nothing close enough to 'learning_rate', so every train.* key is listed
    msg = config_error(None, ["train.learning_rate=1e-4"])
    assert "unknown key 'train.learning_rate'" in msg
    assert "train.lr" in msg and "train.warmup_ratio" in msg


@pytest.mark.parametrize("override, typed, suggestion", [
    ("trian.lr=1e-4", "trian", "train"),
    ("model.hed.type=mlp", "model.hed", "model.head"),
    ("train.epoch=3", "train.epoch", "train.epochs"),
    ("data.lables=[\"a\"]", "data.lables", "data.labels"),
    ("model.head.tpye=mlp", "model.head.tpye", "model.head.type"),
    ("nmae=x", "nmae", "name"),
])
def test_unknown_key_names_typed_key_and_suggests(override, typed, suggestion):
    msg = config_error(None, [override])
    assert f"unknown key '{typed}'" in msg
    assert f"did you mean '{suggestion}'?" in msg


def test_unknown_key_in_file_names_file(tmp_path):
    f = write(tmp_path / "exp.toml", "[model.head]\ntpye = \"mlp\"\n")
    msg = config_error(f)
    assert str(f) in msg
    assert "unknown key 'model.head.tpye'" in msg and "'model.head.type'" in msg


# --- values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("override, key, valid", [
    ("train.precision=fp16", "train.precision", ["auto", "bf16", "fp32"]),
    ("model.head.type=transformer", "model.head.type", ["linear", "mlp"]),
    ("data.format=xlsx", "data.format", ["auto", "csv", "tsv", "jsonl", "parquet"]),
    ("train.schedule=cosin", "train.schedule", ["linear", "cosine", "constant"]),
])
def test_bad_choice_lists_valid_values(override, key, valid):
    msg = config_error(None, [override])
    assert msg.startswith(f"{key}:")
    assert "is not one of" in msg
    for v in valid:
        assert v in msg


def test_bad_choice_suggests_close_value():
    assert "did you mean 'cosine'?" in config_error(None, ["train.schedule=cosin"])


@pytest.mark.parametrize("override, key", [("train=5", "train"), ('model.head="mlp"', "model.head")])
def test_value_where_table_expected(override, key):
    msg = config_error(None, [override])
    assert msg.startswith(f"{key}:") and "table" in msg


def test_value_where_table_expected_in_file(tmp_path):
    f = write(tmp_path / "exp.toml", 'data = "train.csv"\n')
    msg = config_error(f)
    assert str(f) in msg and "data:" in msg and "table" in msg


def test_override_into_a_value_is_rejected():
    msg = config_error(None, ["train.lr=1e-4", "train.lr.x=1"])
    assert "train.lr" in msg and "not a table" in msg


def test_malformed_toml_names_file(tmp_path):
    f = write(tmp_path / "broken.toml", "[train]\nlr = = 3\n")
    msg = config_error(f)
    assert str(f) in msg and "TOML" in msg


def test_missing_file():
    msg = config_error("/nonexistent/exp.toml")
    assert "/nonexistent/exp.toml" in msg and "does not exist" in msg


# --- paths -----------------------------------------------------------------------------------

def test_relative_data_paths_resolve_against_the_file_folder(tmp_path, monkeypatch):
    folder = tmp_path / "exps"
    folder.mkdir()
    write(folder / "exp.toml", """
[data]
source = "data/train.csv"
validation = "../shared/val.csv"
test = "/abs/test.csv"

[model]
path = "./models/tiny"
tokenizer = "vocab"
""")
    monkeypatch.chdir(tmp_path)  # a different working directory must not matter
    cfg = C.load(Path("exps/exp.toml"))
    assert cfg.data.source == str((folder / "data/train.csv").resolve())
    assert cfg.data.validation == str((tmp_path / "shared/val.csv").resolve())
    assert cfg.data.test == "/abs/test.csv"
    assert cfg.model.path == str((folder / "models/tiny").resolve())
    assert cfg.model.tokenizer == str((folder / "vocab").resolve())


def test_builtin_and_empty_paths_are_not_resolved(tmp_path):
    f = write(tmp_path / "exp.toml", '[data]\nsource = "builtin:wordnet-usage"\nvalidation = ""\n'
                                     '[model]\npath = "builtin:minilm-l6"\n')
    cfg = C.load(f)
    assert cfg.data.source == "builtin:wordnet-usage"
    assert cfg.data.validation == ""
    assert cfg.model.path == "builtin:minilm-l6"


def test_load_does_not_mutate_base():
    base = {"train": {"lr": 1e-3}, "data": {"labels": ["a", "b"]}}
    cfg = C.load(None, ["train.lr=2e-5", "train.epochs=1"], base=base)
    assert cfg.train.lr == 2e-5 and cfg.data.labels == ("a", "b")
    assert base == {"train": {"lr": 1e-3}, "data": {"labels": ["a", "b"]}}


# --- round trips, hashes, reference ----------------------------------------------------------

def non_default_config() -> C.ExperimentConfig:
    return C.load(None, [
        "group=sweep-1", "data.source=/data/train.csv", 'data.labels=["b", "a"]',
        "data.text_pair=second", 'data.label=cat"egory', "data.validation_fraction=0.25",
        "model.init=random", "model.head.type=mlp", "model.head.hidden=7", "model.dropout=-1.0",
        "train.lr=2e-5", "train.bucket=false", "train.precision=fp32", "train.epochs=11",
        "train.label_smoothing=0.1", 'name="ünïcode \\\\ back\\\\slash"',
    ])


def test_to_toml_round_trips(tmp_path):
    cfg = non_default_config()
    assert cfg != C.ExperimentConfig()
    text = C.to_toml(cfg)
    tomllib.loads(text)  # valid TOML on its own
    f = write(tmp_path / "resolved.toml", text)
    again = C.load(f)
    assert again == cfg
    assert C.to_toml(again) == text


def test_to_toml_round_trips_defaults(tmp_path):
    f = write(tmp_path / "defaults.toml", C.to_toml(C.ExperimentConfig()))
    assert C.load(f) == C.ExperimentConfig()


def test_config_hash():
    cfg = C.ExperimentConfig()
    h = C.config_hash(cfg)
    assert h == C.config_hash(C.ExperimentConfig())
    assert C.config_hash(C.replace(cfg, name="other", group="elsewhere")) == h
    assert C.config_hash(C.replace(cfg, train__lr=2e-5)) != h
    assert C.config_hash(C.replace(cfg, model__head__type="mlp")) != h
    assert C.config_hash(C.replace(cfg, data__labels=("a", "b"))) != h


def test_fields_added_later_keep_stored_hashes_until_set():
    """model.tokenizer and [pretrain] came after runs were stored: at their defaults they leave
    config_hash as it was (so sweeps still find their finished runs); set, they change it."""
    cfg = C.ExperimentConfig()
    assert C.config_hash(cfg) == "c69478402b17c281"     # the hash before those fields existed
    assert C.config_hash(C.replace(cfg, model__tokenizer="tok")) != C.config_hash(cfg)
    assert C.config_hash(C.replace(cfg, pretrain__mask_rate=0.2)) != C.config_hash(cfg)
    late = {f.name for f in dataclasses.fields(C.ModelConfig) if f.metadata["late"]}
    assert late == {"tokenizer"}


def test_replace_validates():
    cfg = C.replace(C.ExperimentConfig(), train__lr=1, model__head__type="mlp")
    assert cfg.train.lr == 1.0 and cfg.model.head.type == "mlp"
    with pytest.raises(ConfigError, match="train.precision"):
        C.replace(cfg, train__precision="fp16")
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        C.replace(cfg, train__lrr=1e-3)


def leaf_keys(cls, prefix="") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            out += leaf_keys(f.default_factory, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_reference_covers_every_leaf_with_a_doc():
    rows = C.reference()
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(leaf_keys(C.ExperimentConfig))
    assert {"train.lr", "model.head.type", "data.labels", "name"} <= set(keys)
    for key, tp, default, doc in rows:
        assert doc.strip(), key
        assert tp in {"integer", "number", "string", "true/false", "list of string", "list of integer"}, (key, tp)
    by_key = {r[0]: r for r in rows}
    assert by_key["train.lr"][1:3] == ("number", "5e-05")
    assert by_key["train.precision"][3].endswith("[auto | bf16 | fp32]")
    assert by_key["data.labels"][2] == "[]"
    # every documented default is what the dataclasses really use
    defaults = C.to_dict(C.ExperimentConfig())
    for key, _, default, _ in rows:
        node = defaults
        for part in key.split("."):
            node = node[part]
        assert tomllib.loads(f"v = {default}")["v"] == node, key
