"""Task data: readers, column mapping, validation errors, stratified splits, builtin datasets."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encoderlab.config import DataConfig
from encoderlab.data import builtin
from encoderlab.data.dataset import Split, _cap, load_data, read_split, stratified_split
from encoderlab.data.readers import read_table
from encoderlab.errors import DataError

MANIFEST = json.loads((builtin.ROOT / "manifest.json").read_text())


# --- helpers ---------------------------------------------------------------------------------

def builtin_rows(name: str, split: str, n: int) -> list[dict]:
    """The first n rows of a builtin split: small slices of real data."""
    out = []
    with gzip.open(builtin.get(name).files[split], "rt", encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line))
            if len(out) == n:
                break
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def write_tsv(path: Path, rows: list[dict]) -> Path:
    cols = list(rows[0])
    lines = ["\t".join(cols)] + ["\t".join(str(r[c]) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_all_formats(folder: Path, rows: list[dict]) -> list[Path]:
    df = pd.DataFrame(rows)
    csv = folder / "d.csv"
    df.to_csv(csv, index=False)
    parquet = folder / "d.parquet"
    df.to_parquet(parquet)
    return [csv, write_tsv(folder / "d.tsv", rows), write_jsonl(folder / "d.jsonl", rows),
            write_jsonl(folder / "d.jsonl.gz", rows), parquet]


def same_split(a: Split, b: Split) -> None:
    assert a.texts == b.texts
    assert a.pairs == b.pairs
    assert a.labels.tolist() == b.labels.tolist()


def data_error(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    return e.value


def csv_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- readers ---------------------------------------------------------------------------------

def test_formats_give_the_same_split_on_real_data(tmp_path):
    rows = [{"text": r["text"], "label": r["label"]} for r in builtin_rows("wordnet-lexname", "train", 60)]
    # texts pandas or csv quoting could mangle
    rows += [{"text": 'a "quoted", comma text', "label": "noun.act"},
             {"text": "NA", "label": "noun.act"}, {"text": "null", "label": "noun.act"},
             {"text": "12", "label": "noun.act"}, {"text": "  padded  ", "label": "noun.act"},
             {"text": "ünïcödé – 漢字", "label": "noun.act"}]
    cfg = DataConfig()
    results = [read_split(str(p), cfg, "train", None) for p in write_all_formats(tmp_path, rows)]
    first, names = results[0]
    assert first.texts == [r["text"] for r in rows]
    assert names == sorted({r["label"] for r in rows})
    assert [names[i] for i in first.labels] == [r["label"] for r in rows]
    assert first.pairs is None
    for split, other_names in results[1:]:
        same_split(first, split)
        assert other_names == names


def test_formats_give_the_same_pair_split_with_custom_columns(tmp_path):
    rows = [{"sentence": r["text_a"], "gloss": r["text_b"], "y": r["label"], "word": r["word"]}
            for r in builtin_rows("wordnet-usage", "train", 40)]
    cfg = DataConfig(text="sentence", text_pair="gloss", label="y", task="pair")
    results = [read_split(str(p), cfg, "train", None) for p in write_all_formats(tmp_path, rows)]
    first, names = results[0]
    assert first.texts == [r["sentence"] for r in rows]
    assert first.pairs == [r["gloss"] for r in rows]
    assert names == ["match", "other_sense"]
    for split, other_names in results[1:]:
        same_split(first, split)
        assert other_names == names


def test_numeric_labels_are_the_same_in_every_format(tmp_path):
    rows = [{"text": f"t{i}", "label": lab} for i, lab in enumerate([10, 2, 1, 2, 10, 1, 33])]
    cfg = DataConfig()
    results = [read_split(str(p), cfg, "train", None) for p in write_all_formats(tmp_path, rows)]
    # float labels (parquet/jsonl 2.0) read like the integers they are
    pd.DataFrame({"text": [r["text"] for r in rows], "label": [float(r["label"]) for r in rows]}) \
        .to_parquet(tmp_path / "float.parquet")
    results.append(read_split(str(tmp_path / "float.parquet"), cfg, "train", None))
    for split, names in results:
        assert names == ["1", "2", "10", "33"]  # numeric order, not "1", "10", "2", "33"
        assert split.labels.tolist() == [2, 1, 0, 1, 2, 0, 3]


def test_labels_like_01_stay_strings_in_csv(tmp_path):
    f = csv_file(tmp_path / "d.csv", "text,label\na,01\nb,1\nc,001\nd,01\n")
    split, names = read_split(str(f), DataConfig(), "train", None)
    assert set(names) == {"01", "1", "001"}
    assert [names[i] for i in split.labels] == ["01", "1", "001", "01"]


def test_explicit_label_order(tmp_path):
    f = csv_file(tmp_path / "d.csv", "text,label\na,pos\nb,neg\nc,neu\n")
    split, names = read_split(str(f), DataConfig(labels=("neg", "neu", "pos")), "train", None)
    assert names == ["neg", "neu", "pos"]
    assert split.labels.tolist() == [2, 0, 1]
    e = data_error(read_split, str(f), DataConfig(labels=("neg", "pos")), "train", None)
    assert e.row == 3 and e.field == "label" and "'neu'" in str(e) and "data.labels" in str(e)


def test_load_data_with_fixed_files(tmp_path):
    rows = builtin_rows("wordnet-lexname", "train", 30)
    a = write_jsonl(tmp_path / "train.jsonl", rows)
    b = write_jsonl(tmp_path / "val.jsonl", rows[:10])
    c = write_jsonl(tmp_path / "test.jsonl", rows[10:20])
    data, cfg = load_data(DataConfig(source=str(a), validation=str(b), test=str(c)))
    assert cfg.task == "single" and data.task == "single"
    assert (len(data.train), len(data.validation), len(data.test)) == (30, 10, 10)
    assert data.validation.texts == [r["text"] for r in rows[:10]]
    assert data.test.name == "test" and data.test.source == str(c)
    assert [data.label_names[i] for i in data.test.labels] == [r["label"] for r in rows[10:20]]


# --- bad input -------------------------------------------------------------------------------

def test_missing_column_suggests_near_miss(tmp_path):
    f = csv_file(tmp_path / "d.csv", "txt,labels\na,x\nb,y\n")
    e = data_error(read_split, str(f), DataConfig(), "train", None)
    assert e.file == str(f) and str(f) in str(e)
    assert e.field == "text"
    assert "column 'text' not found" in str(e)
    assert "did you mean 'txt'?" in str(e) and 'data.text = "txt"' in str(e)
    e = data_error(read_split, str(f), DataConfig(text="txt"), "train", None)
    assert e.field == "label" and "did you mean 'labels'?" in str(e)


def test_missing_pair_column(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "second": "b", "label": "x"}])
    e = data_error(read_split, str(f), DataConfig(text_pair="secnd", task="pair"), "train", None)
    assert e.field == "secnd" and "did you mean 'second'?" in str(e) and "data.text_pair" in str(e)


@pytest.mark.parametrize("content, row, field, what", [
    ("text,label\na,x\n   ,y\nc,x\n", 2, "text", "empty text"),
    ("text,label\na,x\nb,y\nc,\n", 3, "label", "missing label"),
    ("text,label\na,x\nb,  \n", 2, "label", "missing label"),
])
def test_bad_csv_values_name_file_row_field(tmp_path, content, row, field, what):
    f = csv_file(tmp_path / "d.csv", content)
    e = data_error(read_split, str(f), DataConfig(), "train", None)
    assert (e.file, e.row, e.field) == (str(f), row, field)
    assert what in str(e) and f"row {row}" in str(e) and str(f) in str(e)


@pytest.mark.parametrize("row2, field, what", [
    ({"text": "b"}, "label", "missing label"),
    ({"text": "b", "label": None}, "label", "missing label"),
    ({"text": "", "label": "y"}, "text", "empty text"),
    ({"text": None, "label": "y"}, "text", "missing value"),
    ({"label": "y"}, "text", "missing value"),
])
def test_bad_jsonl_values_name_file_row_field(tmp_path, row2, field, what):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}, row2, {"text": "c", "label": "x"}])
    e = data_error(read_split, str(f), DataConfig(), "train", None)
    assert (e.file, e.row, e.field) == (str(f), 2, field)
    assert what in str(e)


def test_empty_pair_text(tmp_path):
    rows = [{"a": "x", "b": "y", "label": "m"}, {"a": "x", "b": " ", "label": "n"}]
    f = write_jsonl(tmp_path / "d.jsonl", rows)
    e = data_error(read_split, str(f), DataConfig(text="a", text_pair="b", task="pair"), "train", None)
    assert (e.row, e.field) == (2, "b") and "empty text" in str(e)


def test_unseen_label_in_validation_file(tmp_path):
    train = csv_file(tmp_path / "train.csv", "text,label\na,x\nb,y\nc,x\nd,y\n")
    val = csv_file(tmp_path / "val.csv", "text,label\ne,x\nf,z\n")
    test = csv_file(tmp_path / "test.csv", "text,label\ng,y\n")
    e = data_error(load_data, DataConfig(source=str(train), validation=str(val), test=str(test)))
    assert (e.file, e.row, e.field) == (str(val), 2, "label")
    assert "'z'" in str(e) and "does not occur in the training data" in str(e)
    assert "x, y" in str(e)  # the known labels


def test_latin1_bytes_in_csv(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes("text,label\nhello,a\nworld,b\ncaf\xe9 au lait,a\n".encode("latin-1"))
    e = data_error(read_table, f)
    assert e.file == str(f) and "UTF-8" in str(e)
    assert e.row == 3  # data row 3 = line 4 of the file


def test_latin1_bytes_in_jsonl(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    e = data_error(read_table, f)
    assert e.file == str(f) and "UTF-8" in str(e) and e.row == 2


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.jsonl", "d.parquet"])
def test_empty_file(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(b"")
    e = data_error(read_table, f)
    assert e.file == str(f) and "empty" in str(e)


@pytest.mark.parametrize("name, content", [("d.csv", "text,label\n"), ("d.tsv", "text\tlabel\n"),
                                           ("d.jsonl", "\n\n")])
def test_header_only_or_blank_file(tmp_path, name, content):
    f = csv_file(tmp_path / name, content)
    e = data_error(read_table, f)
    assert e.file == str(f) and "no" in str(e) and "rows" in str(e)


def test_malformed_json_line(tmp_path):
    f = csv_file(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'
                                        '{"text": "c", label: "x"}\n')
    e = data_error(read_table, f)
    assert (e.file, e.row) == (str(f), 3) and "invalid JSON" in str(e)


def test_json_line_that_is_not_an_object(tmp_path):
    f = csv_file(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n["b", "y"]\n')
    e = data_error(read_table, f)
    assert e.row == 2 and "JSON object" in str(e)


def test_csv_row_with_too_many_fields(tmp_path):
    f = csv_file(tmp_path / "d.csv", "text,label\na,x\nb,y\nc,d,x\ne,y\n")
    e = data_error(read_table, f)
    assert (e.file, e.row) == (str(f), 3)
    assert "row 3" in str(e) and "expected 2 fields, saw 3" in str(e)


def test_nan_label_in_parquet(tmp_path):
    f = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, 2.0, np.nan]}).to_parquet(f)
    e = data_error(read_split, str(f), DataConfig(), "train", None)
    assert (e.file, e.row, e.field) == (str(f), 3, "label") and "missing label" in str(e)


@pytest.mark.parametrize("name", ["d.txt", "d.xlsx", "data"])
def test_unknown_extension(tmp_path, name):
    f = csv_file(tmp_path / name, "text,label\na,x\n")
    e = data_error(read_table, f)
    assert e.file == str(f) and "data.format" in str(e) and ".csv" in str(e)
    assert len(read_table(f, "csv")) == 1  # an explicit format overrides the extension


def test_nonexistent_file(tmp_path):
    f = tmp_path / "nope.csv"
    e = data_error(read_table, f)
    assert e.file == str(f) and "does not exist" in str(e)
    e = data_error(load_data, DataConfig(source=str(f)))
    assert e.file == str(f)


def test_folder_instead_of_file(tmp_path):
    e = data_error(read_table, tmp_path)
    assert e.file == str(tmp_path) and "folder" in str(e)


def test_fewer_than_two_labels(tmp_path):
    f = csv_file(tmp_path / "d.csv", "text,label\n" + "".join(f"t{i},only\n" for i in range(20)))
    e = data_error(load_data, DataConfig(source=str(f)))
    assert e.file == str(f) and "fewer than 2" in str(e)


def test_pair_task_needs_text_pair(tmp_path):
    f = csv_file(tmp_path / "d.csv", "text,label\na,x\nb,y\n")
    e = data_error(load_data, DataConfig(source=str(f), task="pair"))
    assert "data.text_pair" in str(e)


def test_fractions_that_leave_nothing_to_train_on(tmp_path):
    f = csv_file(tmp_path / "d.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    e = data_error(load_data, DataConfig(source=str(f), validation_fraction=0.5, test_fraction=0.4))
    assert "validation_fraction + test_fraction" in str(e)


# --- stratified split ------------------------------------------------------------------------

def skewed_labels() -> np.ndarray:
    # a big class, medium classes and tiny ones (2 and 1 examples)
    return np.random.default_rng(1).permutation(np.repeat(np.arange(6), [400, 120, 60, 15, 2, 1]))


@pytest.mark.parametrize("fractions", [[0.1, 0.1], [0.3, 0.3], [0.45, 0.44], [0.2]])
def test_stratified_split_keeps_every_class_in_train(fractions):
    labels = skewed_labels()
    parts = stratified_split(labels, fractions, seed=0)
    assert set(np.unique(labels[parts[0]])) == set(np.unique(labels))
    # a partition of all indices
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(labels)))


def test_stratified_split_fractions_and_class_shares():
    labels = skewed_labels()
    n = len(labels)
    train, val, test = stratified_split(labels, [0.1, 0.2], seed=3)
    n_classes = len(np.unique(labels))
    assert abs(len(val) - 0.1 * n) <= n_classes
    assert abs(len(test) - 0.2 * n) <= n_classes
    for c, count in zip(*np.unique(labels, return_counts=True)):
        if count >= 60:
            assert abs(np.sum(labels[val] == c) - 0.1 * count) <= 1
            assert abs(np.sum(labels[test] == c) - 0.2 * count) <= 1


def test_stratified_split_is_seeded():
    labels = skewed_labels()
    a = stratified_split(labels, [0.1, 0.1], seed=7)
    b = stratified_split(labels, [0.1, 0.1], seed=7)
    c = stratified_split(labels, [0.1, 0.1], seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_load_data_split_off_source(tmp_path):
    rows = builtin_rows("wordnet-lexname", "train", 600)
    f = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(source=str(f), validation_fraction=0.2, test_fraction=0.1, split_seed=5)
    data, _ = load_data(cfg)
    sizes = (len(data.train), len(data.validation), len(data.test))
    assert sum(sizes) == 600
    n_classes = len(data.label_names)
    assert abs(len(data.validation) - 120) <= n_classes and abs(len(data.test) - 60) <= n_classes
    assert set(data.train.labels.tolist()) == set(range(n_classes))
    assert (data.train.name, data.validation.name, data.test.name) == ("train", "validation", "test")
    texts = [set(s.texts) for s in (data.train, data.validation, data.test)]
    assert sum(len(t) for t in texts) == len(set().union(*texts))  # disjoint
    again, _ = load_data(cfg)
    assert again.validation.texts == data.validation.texts
    other, _ = load_data(DataConfig(source=str(f), validation_fraction=0.2, test_fraction=0.1, split_seed=6))
    assert other.validation.texts != data.validation.texts


def test_load_data_with_a_fixed_validation_file_splits_only_test(tmp_path):
    rows = builtin_rows("wordnet-lexname", "train", 300)
    a = write_jsonl(tmp_path / "train.jsonl", rows[:250])
    b = write_jsonl(tmp_path / "val.jsonl", [r for r in rows[250:]
                                              if r["label"] in {x["label"] for x in rows[:250]}])
    data, _ = load_data(DataConfig(source=str(a), validation=str(b), test_fraction=0.2))
    assert data.validation.source == str(b)
    assert len(data.train) + len(data.test) == 250
    assert abs(len(data.test) - 50) <= len(data.label_names)


@pytest.mark.parametrize("n", [1, 2, 7, 13, 50, 149])
def test_cap_gives_exactly_n_stratified(n):
    labels = np.repeat([0, 1, 2], [75, 50, 25])
    split = Split("train", [f"t{i}" for i in range(150)], None, labels)
    capped = _cap(split, n, seed=0)
    assert len(capped) == n
    counts = np.bincount(capped.labels, minlength=3)
    assert np.all(np.abs(counts - n * np.array([0.5, 1 / 3, 1 / 6])) <= 1)
    assert capped.texts == [f"t{i}" for i in sorted(int(t[1:]) for t in capped.texts)]  # order kept
    assert _cap(split, n, seed=0).texts == capped.texts


def test_max_train_and_max_eval(tmp_path):
    rows = builtin_rows("wordnet-lexname", "train", 400)
    f = write_jsonl(tmp_path / "d.jsonl", rows)
    full, _ = load_data(DataConfig(source=str(f)))
    data, _ = load_data(DataConfig(source=str(f), max_train=100, max_eval=20))
    assert len(data.train) == 100
    assert len(data.validation) == 20 and len(data.test) == 20
    assert set(data.train.texts) <= set(full.train.texts)
    assert data.label_names == full.label_names
    # the class shares of the capped train set follow the full one
    share = np.bincount(full.train.labels, minlength=len(full.label_names)) / len(full.train)
    counts = np.bincount(data.train.labels, minlength=len(full.label_names))
    assert np.all(np.abs(counts - 100 * share) <= 1)


# --- builtin datasets ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lexname():
    return load_data(DataConfig(source="builtin:wordnet-lexname"))


@pytest.fixture(scope="module")
def usage():
    return load_data(DataConfig(source="builtin:wordnet-usage"))


def test_builtin_names():
    assert builtin.names() == sorted(MANIFEST)
    assert {"wordnet-lexname", "wordnet-usage"} <= set(builtin.names())


@pytest.mark.parametrize("name", ["wordnet-lexname", "wordnet-usage"])
def test_builtin_files_exist(name):
    spec = builtin.get(name)
    for split in ("train", "validation", "test"):
        assert spec.files[split].is_file(), spec.files[split]


def test_builtin_lexname(lexname):
    data, cfg = lexname
    m = MANIFEST["wordnet-lexname"]
    assert data.task == cfg.task == "single"
    assert (len(data.train), len(data.validation), len(data.test)) == \
        (m["sizes"]["train"], m["sizes"]["validation"], m["sizes"]["test"])
    assert data.label_names == m["labels"]
    assert data.train.pairs is None
    # fixed files, not a split of train
    assert cfg.validation.endswith(m["splits"]["validation"]) and cfg.test.endswith(m["splits"]["test"])
    train = set(data.train.texts)
    assert not train & set(data.test.texts)
    assert not train & set(data.validation.texts)
    top, acc = data.majority_baseline("test")
    assert acc < 0.3, (top, acc)
    assert data.majority_baseline("validation")[1] < 0.3
    assert sum(data.class_balance().values()) == pytest.approx(1.0)


def test_builtin_usage(usage):
    data, cfg = usage
    m = MANIFEST["wordnet-usage"]
    assert data.task == cfg.task == "pair"
    assert (cfg.text, cfg.text_pair) == (m["text"], m["text_pair"])
    assert (len(data.train), len(data.validation), len(data.test)) == \
        (m["sizes"]["train"], m["sizes"]["validation"], m["sizes"]["test"])
    assert data.label_names == m["labels"] == ["match", "other_sense"]
    for split in (data.train, data.validation, data.test):
        assert split.pairs is not None and len(split.pairs) == len(split.texts)
        assert all(t.strip() for t in split.pairs)
    train = set(zip(data.train.texts, data.train.pairs))
    assert not train & set(zip(data.test.texts, data.test.pairs))
    assert not train & set(zip(data.validation.texts, data.validation.pairs))


def test_builtin_column_overrides_are_kept():
    # an explicit column that the builtin data lacks must not be replaced by the builtin default
    e = data_error(load_data, DataConfig(source="builtin:wordnet-lexname", text="gloss"))
    assert e.field == "gloss" and "column 'gloss' not found" in str(e)
    assert e.file.endswith(MANIFEST["wordnet-lexname"]["splits"]["train"])


def test_builtin_with_caps():
    data, _ = load_data(DataConfig(source="builtin:wordnet-usage", max_train=64, max_eval=32))
    assert (len(data.train), len(data.validation), len(data.test)) == (64, 32, 32)
    assert np.bincount(data.train.labels).tolist() == [32, 32]


@pytest.mark.parametrize("typo, suggestion", [("wordnet-lexnam", "wordnet-lexname"),
                                              ("wordnet_usage", "wordnet-usage")])
def test_unknown_builtin_suggests_close_name(typo, suggestion):
    e = data_error(load_data, DataConfig(source=f"builtin:{typo}"))
    assert f"'{typo}'" in str(e)
    assert f"did you mean 'builtin:{suggestion}'?" in str(e)
    assert e.field == "data.source"


def test_unknown_builtin_lists_available():
    e = data_error(builtin.get, "sst2")
    assert "wordnet-lexname" in str(e) and "wordnet-usage" in str(e)


def test_k_fold_partitions_training_data_and_keeps_test_fixed(tmp_path):
    from encoderlab.config import DataConfig
    from encoderlab.data.dataset import load_data
    base = dict(source="builtin:wordnet-lexname", max_train=500, max_eval=100)
    whole, _ = load_data(DataConfig(**base))
    seen_val = []
    for i in range(5):
        d, _ = load_data(DataConfig(**base, folds=5, fold=i))
        assert d.test.texts == whole.test.texts                       # test split fixed
        assert len(d.train) + len(d.validation) == len(whole.train)   # folds partition train
        assert not set(d.train.texts) & set(d.validation.texts)
        seen_val.extend(d.validation.texts)
        assert abs(len(d.validation) - 100) <= 5
    assert sorted(seen_val) == sorted(whole.train.texts)              # every example validated once
    with pytest.raises(DataError, match="outside"):
        load_data(DataConfig(**base, folds=5, fold=5))
