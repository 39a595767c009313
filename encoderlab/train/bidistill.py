"""The bi-encoder learning from a cross-encoder (distillation "the other way", reranker -> retriever):
the teacher run, its scores of every training context's candidates (computed once before training and
cached in the run folder), and the two distillation losses over a context's scored candidates.

Which candidates are scored: in list mode the context's own candidate list; in dictionary mode the
gold plus `ranking.k_train - 1` entries the student retrieves from the context's domain before it is
trained (the negatives it will confuse first)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from encoderlab import config as C
from encoderlab.encode.budget import Segments, pair_batch
from encoderlab.errors import ConfigError, StoreError
from encoderlab.kinds import removed_note
from encoderlab.models import ranking as RM
from encoderlab.store.runs import RunStore
from encoderlab.train.loop import autocast
from encoderlab.train.ranking_common import dictionary_tokens, tokenize_split

CACHE = "teacher_scores.npz"


@dataclass
class TeacherScores:
    """Per training context i: its scored candidates `cands[offsets[i]:offsets[i+1]]` (positions in
    the student's candidate segments: the list's unique texts, or the dictionary entries), the
    teacher's scores of them, and the gold's index among them."""
    offsets: np.ndarray     # (N + 1,)
    cands: np.ndarray       # (sum K,)
    scores: np.ndarray      # (sum K,) float32
    gold: np.ndarray        # (N,)
    teacher: str

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.cands[a:b], self.scores[a:b], int(self.gold[i])

    def __len__(self) -> int:
        return len(self.gold)


def teacher_run(ref: str, store: RunStore):
    """The stored run of `ranking.teacher = "run:ID"` in the student's own store (indexed or not),
    checked before any work: a ConfigError naming the key when it is missing, not a cross-encoder,
    not completed or without its saved model."""
    if not ref.startswith("run:"):
        raise ConfigError(f"ranking.teacher = '{ref}': use run:ID of a completed cross-encoder run")
    try:
        stored = store.get(ref.removeprefix("run:"))
    except StoreError as e:
        raise ConfigError(f"ranking.teacher = '{ref}': {e}") from None
    mode = stored.config().ranking.mode if (stored.dir / "config.toml").exists() else "unknown"
    if stored.info.get("task") != "ranking" or mode != "cross":
        raise ConfigError(f"ranking.teacher = '{ref}': run {stored.id} is not a cross-encoder run "
                          f"(task {stored.info.get('task')}, ranking.mode '{mode}')")
    if stored.status != "completed":
        raise ConfigError(f"ranking.teacher = '{ref}': run {stored.id} is {stored.status}, not completed")
    if note := removed_note(stored.dir):
        raise ConfigError(f"ranking.teacher = '{ref}': run {stored.id} {note}")
    if not (stored.dir / "model" / "encoderlab.json").exists():
        raise ConfigError(f"ranking.teacher = '{ref}': run {stored.id} has no saved model (pruned?)")
    return stored


def load_teacher(ref: str, store: RunStore) -> tuple[str, C.ExperimentConfig, RM.CrossEncoder, object]:
    """(run id, its config, cross-encoder in eval mode, tokenizer) of a checked teacher run."""
    stored = teacher_run(ref, store)
    tcfg = stored.config()
    model, tok = RM.load_crossencoder(stored.dir / "model", tcfg.ranking, tcfg.model.head)
    return stored.id, tcfg, model, tok


def scored_lists(s, k_train: int) -> tuple[list[list[int]], np.ndarray]:
    """Each training context's candidates to score (positions in the student's segments) and the
    gold's index among them. Dictionary mode retrieves with the student as it is now (untrained)."""
    sp = s.data.train
    if s.data.candidates == "list":
        return [list(c) for c in s.tokens["train"].cand_index], np.asarray(sp.labels, dtype=np.int64)
    from encoderlab.train.retriever import retrieve
    top = retrieve(s, "train", max(k_train, 1))[0]
    lists, gold = [], []
    for i, row in enumerate(top):
        g = s.dict_pos[int(s.data.dictionary.row[sp.gold[i]])]
        others = [s.dict_pos[int(r)] for r in row if r >= 0 and s.dict_pos[int(r)] != g]
        lists.append([g] + others[:max(k_train - 1, 0)])
        gold.append(0)
    return lists, np.asarray(gold, dtype=np.int64)


def teacher_segments(s, tcfg: C.ExperimentConfig, tok) -> tuple[Segments, Segments]:
    """The training contexts and the candidates under the teacher's tokenizer and budgets, at the
    same positions as the student's (same data, same unique-text / dictionary-row order)."""
    trc = tcfg.ranking
    t = tokenize_split(tok, s.data.train, trc, trc.markers, reserve=1)
    if s.data.candidates == "list":
        return t.ctx, t.cand
    segs, rows = dictionary_tokens(tok, s.data, trc, reserve=1)
    if not np.array_equal(rows, s.dict_rows):
        raise ConfigError("ranking.teacher: the teacher's dictionary rows differ from the student's")
    return t.ctx, segs


@torch.inference_mode()
def score_lists(model: RM.CrossEncoder, tok, ctx: Segments, cand: Segments, lists: list[list[int]], device,
                precision: str, pairs_per_batch: int) -> list[np.ndarray]:
    """The teacher's score of every (context, candidate) pair of `lists`: contexts longest first, about
    `pairs_per_batch` pairs per forward pass (as crossencoder.score batches them)."""
    model.eval()
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(lists)
    order = np.argsort([-len(ctx.ids[i]) for i in range(len(lists))], kind="stable")
    batch, size = [], 0
    for n, i in enumerate(order):
        if lists[i]:
            batch.append(int(i))
            size += len(lists[i])
        if batch and (size >= pairs_per_batch or n == len(order) - 1):
            b = pair_batch(tok, [ctx.ids[j] for j in batch], [[cand.ids[c] for c in lists[j]] for j in batch])
            with autocast(device, precision):
                logits = model(**{k: v.to(device) for k, v in b.items()})["logits"].float().cpu().numpy()
            for r, j in enumerate(batch):
                out[j] = logits[r, :len(lists[j])].astype(np.float32)
            batch, size = [], 0
    return out


def teacher_scores(s, run_dir: Path, store: RunStore) -> TeacherScores:
    """The cached scores when they belong to this teacher and these contexts: in `run_dir`, or
    copied from an earlier run of the same configuration (ranking runs start again in a new
    folder); else the teacher scores them once and the cache is written into `run_dir`."""
    rc = s.cfg.ranking
    path = Path(run_dir) / CACHE
    earlier = earlier_cache(store, Path(run_dir))
    if not path.exists() and earlier is not None and read_cache(earlier, rc.teacher, len(s.data.train)):
        shutil.copyfile(earlier, path)
    cached = read_cache(path, rc.teacher, len(s.data.train))
    if cached is not None:
        return cached
    _, tcfg, model, tok = load_teacher(rc.teacher, store)
    model.to(s.device)
    lists, gold = scored_lists(s, rc.k_train)
    ctx, cand = teacher_segments(s, tcfg, tok)
    scores = score_lists(model, tok, ctx, cand, lists, s.device, s.cfg.train.precision,
                         s.cfg.train.eval_batch_size)
    del model
    ts = TeacherScores(np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64),
                       np.asarray([c for x in lists for c in x], dtype=np.int64),
                       np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32),
                       gold, rc.teacher)
    write_cache(path, ts)
    return ts


def earlier_cache(store: RunStore, run_dir: Path) -> Path | None:
    """The newest cache of another run with this run's config hash (an interrupted run started
    again): the same teacher, contexts and student initialisation, so the same scores."""
    try:
        want = json.loads((run_dir / "run.json").read_text()).get("config_hash")
    except (OSError, ValueError):
        return None
    for p in sorted(store.root.glob(f"*/{CACHE}"), reverse=True):
        if p.parent == run_dir:
            continue
        try:
            if json.loads((p.parent / "run.json").read_text()).get("config_hash") == want:
                return p
        except (OSError, ValueError):
            continue
    return None


def read_cache(path: Path, teacher: str, n: int) -> TeacherScores | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        if str(z["teacher"]) != teacher or len(z["gold"]) != n:
            return None
        return TeacherScores(z["offsets"], z["cands"], z["scores"], z["gold"], teacher)


def write_cache(path: Path, ts: TeacherScores) -> None:
    """Atomic: a killed run never leaves half a cache to be trusted."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, offsets=ts.offsets, cands=ts.cands, scores=ts.scores, gold=ts.gold, teacher=np.str_(ts.teacher))
    tmp.replace(path)


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over contexts of KL(softmax(teacher/T) || softmax(student/T)) over each context's
    candidates (B, K); mask (B, K) False on padding."""
    s = student.masked_fill(~mask, -torch.inf) / temperature
    t = teacher.masked_fill(~mask, -torch.inf) / temperature
    log_s, log_t = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    terms = torch.where(mask, log_t.exp() * (log_t - log_s), torch.zeros_like(s))
    return terms.sum(-1).mean()


def margin_mse_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                    gold: torch.Tensor) -> torch.Tensor:
    """Mean over every (context, negative) of ((s_gold - s_neg) - (t_gold - t_neg))^2 (Hofstaetter
    et al.: the student copies the teacher's margins, not its scale-free distribution)."""
    rows = torch.arange(len(gold), device=student.device)
    ms = student[rows, gold][:, None] - student
    mt = teacher[rows, gold][:, None] - teacher
    neg = mask.clone()
    neg[rows, gold] = False
    if not neg.any():
        return student.sum() * 0.0
    return ((ms - mt)[neg] ** 2).mean()


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, gold: torch.Tensor,
                 rc: C.RankingConfig) -> torch.Tensor:
    if rc.distill_loss == "kl":
        return kl_loss(student, teacher, mask, rc.distill_temperature)
    return margin_mse_loss(student, teacher, mask, gold)


def check(rc: C.RankingConfig) -> None:
    """Settings that only make sense together, refused before any work."""
    if rc.teacher and rc.mode != "bi":
        raise ConfigError(f"ranking.teacher is for ranking.mode = \"bi\" (got '{rc.mode}')")
    if rc.freeze_candidates and rc.shared:
        raise ConfigError("ranking.freeze_candidates = true needs ranking.shared = false (a shared encoder "
                          "trains the candidates' side too)")

