"""Ranking data: contexts (a mention marked inside), candidates and a dictionary of entries.

An example is a context split around its mention (`left`, `mention`, `right`; no mention for
multiple choice), a `domain`, and either an explicit candidate list with the gold index (variable
K) or the id of its gold entry in a dictionary. Readers:

* jsonl: `context` or `context_left` + `mention` + `context_right`; `candidates` as strings, as
  dictionary ids, or as {"id", "text"}; `label` (gold index) and/or `gold` (dictionary id); `domain`.
* long csv/tsv: one row per candidate; `group` (config: ranking.group_column) names the context,
  `candidate` holds its text, `label` is 1 for the gold row and 0 otherwise.
* dictionary (csv/tsv/jsonl): `id`, `title`, `description`, `domain`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from encoderlab.config import DataConfig, RankingConfig
from encoderlab.data import builtin
from encoderlab.data.readers import read_table
from encoderlab.errors import DataError

DEFAULT_DOMAIN = "all"


@dataclass
class Dictionary:
    ids: list[str]
    titles: list[str]
    descriptions: list[str]
    domains: list[str]

    def __post_init__(self):
        self.row = {i: r for r, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def text(self, r: int) -> str:
        return f"{self.titles[r]}: {self.descriptions[r]}" if self.titles[r] else self.descriptions[r]

    def of_domain(self, domain: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.domains) == domain)


@dataclass
class RankSplit:
    """Columns of one split. `candidates[i]` is example i's list of candidate texts (None in pure
    linking data), `cand_ids[i]` their ids; `labels[i]` the gold index in that list (-1 = none);
    `gold[i]` the gold dictionary id ("" = none)."""
    name: str
    ids: list[str]
    left: list[str]
    mention: list[str]
    right: list[str]
    domains: list[str]
    candidates: list[list[str]] | None
    cand_ids: list[list[str]] | None
    labels: np.ndarray
    gold: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx) -> "RankSplit":
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return replace(self, ids=pick(self.ids), left=pick(self.left), mention=pick(self.mention),
                       right=pick(self.right), domains=pick(self.domains), candidates=pick(self.candidates),
                       cand_ids=pick(self.cand_ids), labels=self.labels[np.asarray(idx, dtype=np.int64)],
                       gold=pick(self.gold))

    def domain_names(self) -> list[str]:
        return sorted(set(self.domains))


@dataclass
class RankData:
    train: RankSplit
    validation: RankSplit
    test: RankSplit
    dictionary: Dictionary | None
    candidates: str                 # "list" | "dictionary"


def _str(v, file, row, field, allow_empty=False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        if allow_empty:
            return ""
        raise DataError("missing value", file=file, row=row, field=field)
    v = str(v)
    if not v.strip() and not allow_empty:
        raise DataError("empty text", file=file, row=row, field=field)
    return v


def read_dictionary(path: str, fmt: str = "auto") -> Dictionary:
    df = read_table(path, fmt)
    for col in ("id", "description"):
        if col not in df.columns:
            raise DataError(f"dictionary needs columns id, title, description, domain; '{col}' is missing "
                            f"(columns: {', '.join(map(str, df.columns))})", file=path, field=col)
    n = len(df)
    ids = [_str(v, path, i + 1, "id") for i, v in enumerate(df["id"].tolist())]
    titles = [_str(v, path, i + 1, "title", True) for i, v in enumerate(df["title"].tolist())] \
        if "title" in df.columns else [""] * n
    desc = [_str(v, path, i + 1, "description") for i, v in enumerate(df["description"].tolist())]
    doms = [_str(v, path, i + 1, "domain", True) or DEFAULT_DOMAIN for i, v in enumerate(df["domain"].tolist())] \
        if "domain" in df.columns else [DEFAULT_DOMAIN] * n
    seen = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise DataError(f"duplicate id '{x}'", file=path, row=i + 1, field="id")
        seen.add(x)
    return Dictionary(ids, titles, desc, doms)


def _context(rec: dict, file: str, row: int) -> tuple[str, str, str]:
    if "mention" in rec and rec.get("mention") is not None and not (isinstance(rec["mention"], float)):
        return (_str(rec.get("context_left", ""), file, row, "context_left", True),
                _str(rec["mention"], file, row, "mention"),
                _str(rec.get("context_right", ""), file, row, "context_right", True))
    if "context" not in rec:
        raise DataError("needs a 'context' field, or 'context_left' + 'mention' + 'context_right'",
                        file=file, row=row, field="context")
    return _str(rec["context"], file, row, "context"), "", ""


def _gold_index(v, k: int, file: str, row: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer)) or float(v) != int(v):
        raise DataError(f"label must be the gold candidate's index (an integer), got {v!r}",
                        file=file, row=row, field="label")
    if not 0 <= int(v) < k:
        raise DataError(f"label {int(v)} is outside the candidate list (0 .. {k - 1})",
                        file=file, row=row, field="label")
    return int(v)


def _read_jsonl(path: str, df: pd.DataFrame, dictionary: Dictionary | None, name: str) -> RankSplit:
    cols = {"ids": [], "left": [], "mention": [], "right": [], "domains": [], "candidates": [],
            "cand_ids": [], "labels": [], "gold": []}
    has_lists = "candidates" in df.columns
    for i, rec in enumerate(df.to_dict("records"), 1):
        left, mention, right = _context(rec, path, i)
        gold = rec.get("gold")
        gold = "" if gold is None or (isinstance(gold, float) and np.isnan(gold)) else str(gold)
        if gold and dictionary is not None and gold not in dictionary.row:
            raise DataError(f"gold id '{gold}' is not in the dictionary", file=path, row=i, field="gold")
        texts, ids, label = None, None, -1
        if has_lists:
            cands = rec.get("candidates")
            if not isinstance(cands, (list, np.ndarray)) or len(cands) < 1:
                raise DataError("candidates must be a non-empty list", file=path, row=i, field="candidates")
            texts, ids = [], []
            for j, c in enumerate(cands):
                where = f"candidates[{j}]"
                if isinstance(c, dict):
                    cid = str(c.get("id", j))
                    t = c.get("text")
                    if t is None and dictionary is not None and cid in dictionary.row:
                        t = dictionary.text(dictionary.row[cid])
                    texts.append(_str(t, path, i, where + ".text"))
                    ids.append(cid)
                elif dictionary is not None and str(c) in dictionary.row:
                    ids.append(str(c))
                    texts.append(dictionary.text(dictionary.row[str(c)]))
                else:
                    texts.append(_str(c, path, i, where))
                    ids.append(str(j))
            if rec.get("label") is not None and not (isinstance(rec["label"], float) and np.isnan(rec["label"])):
                label = _gold_index(rec["label"], len(texts), path, i)
            elif gold and gold in ids:
                label = ids.index(gold)
            else:
                raise DataError("needs 'label' (gold index) or a 'gold' id among its candidates",
                                file=path, row=i, field="label")
        elif not gold:
            raise DataError("needs 'candidates' + 'label', or a 'gold' dictionary id", file=path, row=i,
                            field="gold")
        dom = rec.get("domain")
        dom = DEFAULT_DOMAIN if dom is None or (isinstance(dom, float) and np.isnan(dom)) else str(dom)
        for k, v in (("ids", str(rec.get("id", i))), ("left", left), ("mention", mention), ("right", right),
                     ("domains", dom), ("candidates", texts), ("cand_ids", ids), ("labels", label),
                     ("gold", gold)):
            cols[k].append(v)
    if not has_lists:
        cols["candidates"] = cols["cand_ids"] = None
    return RankSplit(name, cols["ids"], cols["left"], cols["mention"], cols["right"], cols["domains"],
                     cols["candidates"], cols["cand_ids"], np.asarray(cols["labels"], dtype=np.int64),
                     cols["gold"], path)


def _read_long(path: str, df: pd.DataFrame, group: str, name: str) -> RankSplit:
    """One row per candidate: rows of a group share the context; label 1 marks the gold row."""
    for col in (group, "candidate", "label"):
        if col not in df.columns:
            raise DataError(f"long form needs columns {group}, candidate, label and context (or "
                            f"context_left, mention, context_right); '{col}' is missing", file=path, field=col)
    groups: dict[str, dict] = {}
    for i, rec in enumerate(df.to_dict("records"), 1):
        g = _str(rec[group], path, i, group)
        ctx = _context(rec, path, i)
        lab = rec["label"]
        if str(lab).strip().lower() not in ("0", "1", "true", "false", "0.0", "1.0"):
            raise DataError(f"label must be 1 (gold) or 0, got {lab!r}", file=path, row=i, field="label")
        e = groups.setdefault(g, {"ctx": ctx, "row": i, "texts": [], "gold": [], "domain": rec.get("domain")})
        if ctx != e["ctx"]:
            raise DataError(f"group '{g}' has a different context than its row {e['row']}", file=path, row=i,
                            field="context")
        e["texts"].append(_str(rec["candidate"], path, i, "candidate"))
        if str(lab).strip().lower() in ("1", "true", "1.0"):
            e["gold"].append(len(e["texts"]) - 1)
    rows = []
    for g, e in groups.items():
        if len(e["gold"]) != 1:
            raise DataError(f"group '{g}' has {len(e['gold'])} gold rows (label 1); exactly one is needed",
                            file=path, row=e["row"], field="label")
        dom = e["domain"]
        rows.append({"id": g, "context_left": e["ctx"][0], "mention": e["ctx"][1] or None,
                     "context_right": e["ctx"][2], "context": e["ctx"][0], "candidates": e["texts"],
                     "label": e["gold"][0],
                     "domain": None if dom is None or (isinstance(dom, float) and np.isnan(dom)) else dom})
    return _read_jsonl(path, pd.DataFrame(rows), None, name)


def read_split(path: str, fmt: str, rc: RankingConfig, dictionary: Dictionary | None, name: str) -> RankSplit:
    df = read_table(path, fmt)
    if rc.group_column in df.columns:
        return _read_long(path, df, rc.group_column, name)
    return _read_jsonl(path, df, dictionary, name)


def _cap(split: RankSplit, n: int, seed: int) -> RankSplit:
    """At most n examples, each domain keeping its share."""
    if not n or len(split) <= n:
        return split
    rng = np.random.default_rng(seed)
    doms = np.asarray(split.domains)
    pos = np.empty(len(split))
    for d in np.unique(doms):
        idx = rng.permutation(np.flatnonzero(doms == d))
        pos[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    order = np.lexsort((rng.random(len(split)), pos))
    return split.subset(np.sort(order[:n]))


def _ranking_builtins() -> list[str]:
    """The ranking builtins, read from the manifest so that the message stays true as sets are added."""
    return [f"builtin:{n}" for n in builtin.names() if builtin.get(n).task == "ranking"]


def load_ranking(dc: DataConfig, rc: RankingConfig) -> RankData:
    """Read the three splits (files, or the builtin's) and the dictionary; cap train/eval sizes."""
    files = {"train": dc.source, "validation": dc.validation, "test": dc.test}
    dict_path = rc.dictionary
    if dc.source.startswith("builtin:"):
        spec = builtin.get(dc.source.removeprefix("builtin:"))
        if spec.task != "ranking":
            raise DataError(f"{dc.source} is a {spec.task} dataset; ranking needs one of "
                            f"{', '.join(_ranking_builtins())}", field="data.source")
        files = {k: files[k] if files[k] and k != "train" else str(spec.files[k]) for k in files}
        dict_path = dict_path or (str(spec.dictionary) if spec.dictionary else "")
    for k in ("validation", "test"):
        if not files[k]:
            raise DataError(f"ranking needs a {k} file (data.{k}): domains are held out whole, not split "
                            "off at random", field=f"data.{k}")
    dictionary = read_dictionary(dict_path) if dict_path else None
    mode = rc.candidates if rc.candidates != "auto" else ("dictionary" if dictionary else "list")
    if mode == "dictionary" and dictionary is None:
        raise DataError("ranking.candidates = 'dictionary' needs ranking.dictionary", field="ranking.dictionary")
    splits = {k: read_split(files[k], dc.format, rc, dictionary, k) for k in files}
    for k, sp in splits.items():
        if mode == "list" and sp.candidates is None:
            raise DataError("examples have no candidate list; give ranking.dictionary to link against",
                            file=sp.source, field="candidates")
        if mode == "dictionary":
            missing = [i for i, g in enumerate(sp.gold) if not g]
            if missing:
                raise DataError("dictionary mode needs a 'gold' id on every example", file=sp.source,
                                row=missing[0] + 1, field="gold")
    splits["train"] = _cap(splits["train"], dc.max_train, dc.split_seed)
    for k in ("validation", "test"):
        splits[k] = _cap(splits[k], dc.max_eval, dc.split_seed)
    return RankData(**splits, dictionary=dictionary, candidates=mode)
