"""A bi-encoder as a retriever: its setup (data, model, tokenized splits and dictionary), embeddings,
top-k retrieval per domain, list ranking and evaluation; and the stored (or zero-shot) retriever whose
top-k a cross-encoder reranks. Used by the bi-encoder and cross-encoder recipes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from encoderlab import config as C
from encoderlab import machine
from encoderlab import metrics as M
from encoderlab.data.ranking import RankData, load_ranking
from encoderlab.kinds import removed_note
from encoderlab.encode.budget import Segments, single_batch
from encoderlab.models import ranking as RM
from encoderlab.retrieval import VectorIndex
from encoderlab.store.runs import RunStore
from encoderlab.train.loop import autocast, pick_device
from encoderlab.train.ranking_common import SPLITS, SplitTokens, dictionary_tokens, ks, tokenize_split


@dataclass
class BiSetup:
    cfg: C.ExperimentConfig
    data: RankData
    model: RM.BiEncoder
    tokenizer: object
    tokens: dict[str, SplitTokens]
    dict_segs: Segments | None       # dictionary entries of the used domains
    dict_rows: np.ndarray | None     # their rows in data.dictionary
    device: torch.device
    dict_pos: dict | None = None      # dictionary row -> position in dict_segs (training lookups)
    domain_pos: dict | None = None    # training domain -> positions of its entries (random negatives)


def setup(cfg: C.ExperimentConfig, store_root=None) -> BiSetup:
    machine.apply_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    zero = cfg.ranking.mode == "zero-shot"
    if zero:   # the baseline as the issue defines it, whatever the file says
        cfg = C.replace(cfg, **{"ranking.score": "cosine", "model.head.pooling": "mean"})
    data = load_ranking(cfg.data, cfg.ranking)
    model, tok, _ = RM.build(cfg.model, cfg.ranking, store_root, markers=cfg.ranking.markers and not zero)
    device = pick_device(cfg.train.device)
    model.to(device)
    markers = cfg.ranking.markers and not zero
    tokens = {s: tokenize_split(tok, getattr(data, s), cfg.ranking, markers, reserve=2) for s in SPLITS}
    segs, rows = dictionary_tokens(tok, data, cfg.ranking, 2) if data.candidates == "dictionary" else (None, None)
    return BiSetup(cfg, data, model, tok, tokens, segs, rows, device)


@torch.inference_mode()
def embed(model: RM.BiEncoder, tok, segs: list[list[int]], side: str, device, precision: str,
          batch_size: int = 128) -> np.ndarray:
    """(N, H) vectors of contexts (side "ctx") or candidates, longest first, in input order."""
    model.eval()
    fn = model.embed_contexts if side == "ctx" else model.embed_candidates
    order = np.argsort([-len(s) for s in segs], kind="stable")
    out = None
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = {k: v.to(device) for k, v in single_batch(tok, [segs[j] for j in idx]).items()}
        with autocast(device, precision):
            v = fn(**batch).float().cpu().numpy()
        if out is None:
            out = np.empty((len(segs), v.shape[1]), dtype=np.float32)
        out[idx] = v
    return out


def retrieve(s: BiSetup, split: str, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k dictionary rows (N, k) of each context from its own domain's index (-1 pads a domain
    with fewer entries), the gold's 1-based rank in them (0 = not retrieved) and their scores (N, k).
    The dictionary is encoded once per call."""
    sp, d = getattr(s.data, split), s.data.dictionary
    tc = s.cfg.train
    ctx = embed(s.model, s.tokenizer, s.tokens[split].ctx.ids, "ctx", s.device, tc.precision, tc.eval_batch_size)
    doms = np.asarray(d.domains)[s.dict_rows]
    needed = np.isin(doms, sorted(set(sp.domains)))
    vecs = np.zeros((len(s.dict_rows), ctx.shape[1]), dtype=np.float32)
    pos = np.flatnonzero(needed)
    vecs[pos] = embed(s.model, s.tokenizer, [s.dict_segs.ids[p] for p in pos], "cand", s.device,
                      tc.precision, tc.eval_batch_size)
    top = np.full((len(sp), k), -1, dtype=np.int64)
    scores = np.full((len(sp), k), -np.inf, dtype=np.float32)
    ranks = np.zeros(len(sp), dtype=np.int64)
    ex_doms = np.asarray(sp.domains)
    for dom in sorted(set(sp.domains)):
        members = np.flatnonzero(doms == dom)
        ex = np.flatnonzero(ex_doms == dom)
        found_scores, hits = VectorIndex(vecs[members]).search(ctx[ex], k)
        rows = s.dict_rows[members][hits]                                               # (n, k')
        top[ex, :rows.shape[1]] = rows
        scores[ex, :rows.shape[1]] = found_scores
        for j, i in enumerate(ex):
            found = np.flatnonzero(rows[j] == d.row[sp.gold[i]])
            ranks[i] = found[0] + 1 if len(found) else 0
    return top, ranks, scores


def list_scores(s: BiSetup, split: str) -> list[np.ndarray]:
    """Each context's scores over its own candidate list (explicit-list mode)."""
    t, tc = s.tokens[split], s.cfg.train
    ctx = embed(s.model, s.tokenizer, t.ctx.ids, "ctx", s.device, tc.precision, tc.eval_batch_size)
    cand = embed(s.model, s.tokenizer, t.cand.ids, "cand", s.device, tc.precision, tc.eval_batch_size)
    return [cand[idx] @ ctx[i] for i, idx in enumerate(t.cand_index)]


def list_ranks(s: BiSetup, split: str) -> np.ndarray:
    """Gold rank of each context among its own candidate list, by score."""
    labels = getattr(s.data, split).labels
    return np.asarray([M.gold_ranks(sc[None], labels[i:i + 1])[0] for i, sc in enumerate(list_scores(s, split))])


def evaluate(s: BiSetup, split: str) -> dict:
    k_max = max(ks(s.cfg.ranking))
    ranks = retrieve(s, split, k_max)[1] if s.data.candidates == "dictionary" else list_ranks(s, split)
    return M.ranking(ranks, getattr(s.data, split).domains, ks(s.cfg.ranking))


def retriever(cfg: C.ExperimentConfig, store_root) -> BiSetup:
    """The bi-encoder that feeds a cross-encoder its top-k in dictionary mode: a stored bi-encoder
    run (`run:ID`), or the zero-shot encoder."""
    rc = cfg.ranking
    if rc.retriever == "zero-shot":
        return setup(C.replace(cfg, **{"ranking.mode": "zero-shot"}), store_root)
    from encoderlab.errors import ConfigError
    if not rc.retriever.startswith("run:"):
        raise ConfigError(f"ranking.retriever = '{rc.retriever}': use run:ID of a bi-encoder run or zero-shot")
    store = RunStore(store_root)
    stored = store.get(rc.retriever.removeprefix("run:"))
    folder = stored.dir / "model"
    if note := removed_note(stored.dir):
        raise ConfigError(f"ranking.retriever: run {stored.id} {note}")
    if not (folder / "encoderlab.json").exists():
        raise ConfigError(f"ranking.retriever: run {stored.id} has no saved bi-encoder (status {stored.status})")
    # the stored encoder's own budgets, pooling and markers; this run's data and candidate mode
    brc = replace(stored.config().ranking, mode="bi", top_k=rc.top_k, candidates=rc.candidates,
                  dictionary=rc.dictionary)
    bcfg = replace(cfg, ranking=brc)
    model, tok = RM.load_biencoder(folder, brc)
    device = pick_device(cfg.train.device)
    model.to(device)
    data = load_ranking(cfg.data, brc)
    tokens = {sp: tokenize_split(tok, getattr(data, sp), brc, brc.markers, 2) for sp in SPLITS}
    segs, rows = dictionary_tokens(tok, data, brc, 2) if data.candidates == "dictionary" else (None, None)
    return BiSetup(bcfg, data, model, tok, tokens, segs, rows, device)
