"""A ranking run's model as a sentence-transformers folder: a bi-encoder becomes a
`SentenceTransformer` (Transformer -> Pooling [-> Normalize]), a cross-encoder a `CrossEncoder`
(Transformer -> Pooling -> Dense head with output "scores"); plus the dictionary index as numpy.

The folder is written inside the run's own directory (`<run>/sentence-transformers/`, like
`bench.json`): it is another serving format of the same model, not a new model, so no derived run
is made. The export is checked before it is reported: the test split's candidates are scored by
the loaded folder and by encoderlab's own model (`export-st.json`: top-1 agreement, max |score diff|).

Two unshared encoders (ranking.shared = false) become a Router: `encode_query` embeds contexts,
`encode_document` candidates (both work for a shared encoder too). Pooling over the marked mention
(ranking.context_pooling = "mention") has no sentence-transformers module: it is refused with the reason."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from encoderlab import config as C
from encoderlab import kinds, machine
from encoderlab.data.ranking import RankData, RankSplit, load_ranking
from encoderlab.encode.budget import MARKERS, pair_batch
from encoderlab.errors import ConfigError
from encoderlab.models import ranking as RM
from encoderlab.store import atomic
from encoderlab.store.runs import Run
from encoderlab.train.ranking_common import tokenize_split
from encoderlab.train.retriever import embed

VERB = kinds.ST_EXPORT
FOLDER = "sentence-transformers"


def _blocker(rc: C.RankingConfig, mode: str) -> str:
    """Why the run's scoring has no sentence-transformers equivalent ("" = it has one)."""
    if mode not in ("bi", "cross"):
        return f"ranking.mode {mode} has no trained model to export"
    if rc.context_pooling == "mention":
        return ("ranking.context_pooling = \"mention\" pools the tokens between [M] and [/M], which no "
                "sentence-transformers Pooling module does; train with context_pooling = \"model\" to export")
    return ""


def context_text(split: RankSplit, i: int, markers: bool) -> str:
    """Example i's context as one string, the mention wrapped in [M] ... [/M] as encoderlab marks it
    (the markers are special tokens of the exported tokenizer, so they are never split)."""
    m = split.mention[i]
    if m and markers:
        m = f"{MARKERS[0]} {m} {MARKERS[1]}"
    left, right = split.left[i], split.right[i]
    return " ".join(p for p in (left.strip(), m.strip(), right.strip()) if p)


def candidate_lists(data: RankData, split: RankSplit) -> list[list[str]]:
    """Each example's candidate texts: its own list, or (dictionary mode) the gold entries of its
    split's examples in its domain, a small real index to check the export against."""
    if split.candidates is not None:
        return split.candidates
    d = data.dictionary
    row = {i: r for r, i in enumerate(d.ids)}
    by_dom: dict[str, list[str]] = {}
    for g, dom in zip(split.gold, split.domains):
        if g in row and d.text(row[g]) not in by_dom.setdefault(dom, []):
            by_dom[dom].append(d.text(row[g]))
    return [by_dom.get(dom, []) for dom in split.domains]


def _st_modules(model_dir: Path, pooling: str, max_length: int, tokenizer_dir: Path | None = None, **lengths):
    """Transformer + Pooling; `lengths` (query_length / document_length) cap `encode_query` /
    `encode_document` texts at the run's context / candidate budgets (the head of the text is kept)."""
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    tr = Transformer(str(model_dir), max_seq_length=max_length,
                     tokenizer_name_or_path=str(tokenizer_dir) if tokenizer_dir else None, **lengths)
    return tr, Pooling(tr.get_embedding_dimension(), pooling_mode=pooling)


def _head_modules(head: torch.nn.Module) -> list:
    """encoderlab's Head (dropout -> linear [-> GELU -> dropout -> linear]) as Dense modules whose
    last one writes "scores" (dropout is the identity at inference)."""
    from sentence_transformers.base.modules import Dense
    linears = [m for m in head.net if isinstance(m, torch.nn.Linear)]
    out = []
    for j, lin in enumerate(linears):
        last = j == len(linears) - 1
        out.append(Dense(lin.in_features, lin.out_features, activation_function=None if last else torch.nn.GELU(),
                         init_weight=lin.weight.detach().clone(), init_bias=lin.bias.detach().clone(),
                         module_output_name="scores" if last else "sentence_embedding"))
    return out


def export_sentence_transformers(run: Run, out: Path | None = None, index: bool = True) -> dict:
    """Write the run's model as a sentence-transformers folder (default `<run>/sentence-transformers`),
    check it against encoderlab's scoring on the test split, and (bi-encoder, dictionary data) save
    the dictionary index as numpy. Returns the check (also in `<out>/export-st.json` and run.json)."""
    kinds.require(run, VERB)
    cfg = run.config()
    rc = cfg.ranking
    src = run.dir / "model"
    meta = json.loads((src / "encoderlab.json").read_text()) if (src / "encoderlab.json").exists() else {}
    mode = meta.get("mode", rc.mode)
    why = _blocker(rc, mode)
    if not why and not meta:
        why = f"it has no saved model (status {run.status})"
    if why:
        raise ConfigError(f"`{VERB}`: run {run.id} cannot be exported: {why}")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise ConfigError(f"`{VERB}` needs sentence-transformers: pip install 'encoderlab[st]'") from None
    from transformers.utils import logging as hf_logging
    out = Path(out) if out else run.dir / FOLDER
    if out.exists() and any(out.iterdir()):
        if not (out / "export-st.json").exists():
            raise ConfigError(f"--out {out} is a non-empty folder that is not an earlier export; choose another")
        shutil.rmtree(out)     # an earlier export of a run: made again whole, no stale index left over
    out.mkdir(parents=True, exist_ok=True)
    machine.apply_threads(cfg.train.threads)
    rc = replace(rc, mode=mode)
    data = load_ranking(cfg.data, rc)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()    # the unused BERT pooler, newly initialized on load, is expected
    try:
        if mode == "bi":
            check = _export_bi(src, out, meta["pooling"], rc, cfg, data, index)
        else:
            check = _export_cross(src, out, meta["pooling"], rc, cfg, data)
    finally:
        hf_logging.set_verbosity(verbosity)
    check = {"format": "sentence-transformers", "class": "SentenceTransformer" if mode == "bi" else "CrossEncoder",
             "folder": str(out), **check}
    atomic.write_text(out / "export-st.json", json.dumps(check, indent=2))
    run.update(st_export=check)
    return check


def _agreement(ours: list[np.ndarray], theirs: list[np.ndarray]) -> dict:
    pairs = [(a, b) for a, b in zip(ours, theirs) if len(a)]
    return {"split": "test", "contexts": len(pairs), "candidates": int(sum(len(a) for a, _ in pairs)),
            "top1_agreement": float(np.mean([a.argmax() == b.argmax() for a, b in pairs])),
            "max_abs_score_diff": float(max(np.abs(a - b).max() for a, b in pairs))}


def _export_bi(src: Path, out: Path, pooling: str, rc, cfg, data: RankData, index: bool) -> dict:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Router
    lengths = {"query_length": rc.context_tokens, "document_length": rc.candidate_tokens}
    tr, pool = _st_modules(src, pooling, max(rc.context_tokens, rc.candidate_tokens), **lengths)
    if (src / "candidate_encoder").exists():    # ranking.shared = false: contexts are queries, candidates documents
        cand = _st_modules(src / "candidate_encoder", pooling, rc.candidate_tokens, tokenizer_dir=src, **lengths)
        modules = [Router.for_query_document(query_modules=[tr, pool], document_modules=list(cand))]
    else:
        modules = [tr, pool]
    modules += [Normalize()] if rc.score == "cosine" else []
    st = SentenceTransformer(modules=modules, device="cpu")
    st.save(str(out))
    st = SentenceTransformer(str(out), device="cpu")            # check what a user loads
    ours_model, tok = RM.load_biencoder(src, rc)
    split = data.test
    lists = candidate_lists(data, split)
    texts = [context_text(split, i, rc.markers) for i in range(len(split))]
    uniq = list(dict.fromkeys(c for cs in lists for c in cs))
    view = replace(split, candidates=[uniq], labels=np.zeros(1, dtype=np.int64), left=split.left[:1],
                   mention=split.mention[:1], right=split.right[:1])
    ctx_segs = tokenize_split(tok, split, rc, rc.markers, reserve=2).ctx
    cand_segs = tokenize_split(tok, view, rc, rc.markers, reserve=2).cand
    ctx_tokens, cand_tokens = ctx_segs.ids, cand_segs.ids
    tc = cfg.train
    ours_c = embed(ours_model, tok, ctx_tokens, "ctx", torch.device("cpu"), "fp32", tc.eval_batch_size)
    ours_k = embed(ours_model, tok, cand_tokens, "cand", torch.device("cpu"), "fp32", tc.eval_batch_size)
    st_c = st.encode_query(texts, batch_size=tc.eval_batch_size, convert_to_numpy=True)
    st_k = st.encode_document(uniq, batch_size=tc.eval_batch_size, convert_to_numpy=True)
    pos = {c: j for j, c in enumerate(uniq)}
    idx = [[pos[c] for c in cs] for cs in lists]
    check = _agreement([ours_c[i] @ ours_k[ix].T for i, ix in enumerate(idx)],
                       [st_c[i] @ st_k[ix].T for i, ix in enumerate(idx)])
    check["score"] = rc.score
    check["cut_by_budget"] = {"contexts": ctx_segs.truncated, "candidates": cand_segs.truncated}
    if index and data.dictionary is not None:
        check["index"] = write_index(st, data, out / "index", tc.eval_batch_size)
    return check


def write_index(st, data: RankData, folder: Path, batch_size: int) -> dict:
    """The dictionary entries of the domains the run's splits use, embedded by the exported model:
    `embeddings.npy` (N, H) float32 and `entries.json` (id, domain per row, same order)."""
    doms = sorted({d for s in ("train", "validation", "test") for d in getattr(data, s).domains})
    d = data.dictionary
    rows = np.flatnonzero(np.isin(np.asarray(d.domains), doms))
    vecs = st.encode_document([d.text(r) for r in rows], batch_size=batch_size, convert_to_numpy=True)
    vecs = vecs.astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", vecs)
    atomic.write_text(folder / "entries.json", json.dumps({"ids": [d.ids[r] for r in rows],
                                                           "domains": [d.domains[r] for r in rows]}))
    return {"entries": int(len(rows)), "dim": int(vecs.shape[1]), "domains": len(doms)}


def _export_cross(src: Path, out: Path, pooling: str, rc, cfg, data: RankData) -> dict:
    from sentence_transformers import CrossEncoder
    ours_model, tok = RM.load_crossencoder(src, rc, cfg.model.head)
    tr, pool = _st_modules(src, pooling, rc.context_tokens + rc.candidate_tokens)
    ce = CrossEncoder(modules=[tr, pool, *_head_modules(ours_model.head)], device="cpu",
                      activation_fn=torch.nn.Identity())
    ce.save(str(out))
    ce = CrossEncoder(str(out), device="cpu")                    # check what a user loads
    split = data.test
    lists = candidate_lists(data, split)
    ctx_segs = tokenize_split(tok, split, rc, rc.markers, reserve=1).ctx
    ctx = ctx_segs.ids
    ours, theirs, cut = [], [], 0
    for i, cands in enumerate(lists):
        if not cands:
            ours.append(np.zeros(0))
            theirs.append(np.zeros(0))
            continue
        view = replace(split, candidates=[cands], labels=np.zeros(1, dtype=np.int64), left=split.left[:1],
                       mention=split.mention[:1], right=split.right[:1])
        cand_segs = tokenize_split(tok, view, rc, rc.markers, reserve=1).cand
        segs, cut = cand_segs.ids, cut + cand_segs.truncated
        with torch.inference_mode():
            ours.append(ours_model(**pair_batch(tok, [ctx[i]], [segs]))["logits"][0].float().numpy())
        text = context_text(split, i, rc.markers)
        theirs.append(np.asarray(ce.predict([(text, c) for c in cands], convert_to_numpy=True,
                                            batch_size=cfg.train.eval_batch_size), dtype=np.float32))
        if rc.loss == "am-softmax":     # encoderlab ranks by scale * tanh(head score): the same order
            theirs[-1] = rc.scale * np.tanh(theirs[-1])
    check = _agreement(ours, theirs)
    check["cut_by_budget"] = {"contexts": ctx_segs.truncated, "candidates": cut}
    check["score"] = "head output" + (f" (compared as {rc.scale} * tanh of it, as encoderlab ranks)"
                                     if rc.loss == "am-softmax" else "")
    return check
