#!/usr/bin/env python
"""sentence-transformers' own trainers on encoderlab's ranking data: the peer rows beside `encoderlab rank`.

A plain sentence-transformers (ST) user with the same contexts would train a `CrossEncoder` reranker or a
`SentenceTransformer` bi-encoder from the same MiniLM-L6 folder with ST's documented losses. This script does
that on the SAME training contexts (`load_ranking`, `--max-train` capped with encoderlab's seeded cap) and
scores every candidate of the SAME validation / test contexts with encoderlab's metric function
(`metrics.gold_ranks` -> `metrics.ranking`), so its numbers sit beside encoderlab's runs:

* zero-shot: the untrained SentenceTransformer, cosine, the context without marks (encoderlab's zero-shot
  baseline: mean pooling, cosine, no markers). It must land within ~1 point of encoderlab's 0.468 (full test).
* st-cross: `CrossEncoder` (num_labels=1) + `CrossEncoderTrainer`. Loss `--cross-loss bce` (default):
  `BinaryCrossEntropyLoss` on (context, candidate, 1/0) pairs, the loss ST's reranker training guide and
  MS MARCO examples use; each context brings its gold and `--k-train - 1` of its other candidates (encoderlab's
  `ranking.k_train`), `--batch-size` contexts per step. `--cross-loss listnet`: `ListNetLoss` on
  (context, [candidates], [1/0 labels]): softmax cross-entropy over the candidates, the objective
  encoderlab's cross-encoder optimises.
* st-bi: `SentenceTransformer` + `MultipleNegativesRankingLoss` on (context, gold definition) pairs, in-batch
  negatives, `BatchSamplers.NO_DUPLICATES` (as ST recommends); `--hard-negatives` adds one other sense of
  the context's own word as a (context, gold, negative) triplet.

Contexts are rendered the way a plain ST user would mark the word: `--mark brackets` (default) gives
`left + "[" + mention + "]" + right`, `quotes` puts the word in double quotes, `plain` leaves it unmarked
(the zero-shot row is always plain). Sequences are cut at `--max-length` tokens per segment (the study's
32/32 budget; the cross-encoder's pair gets twice that). Training stops at `--max-seconds` of wall time
(a callback checked after every step). Precision: `--precision auto` asks encoderlab's machine probe (bf16
only where it is measured faster) and passes the answer to the ST trainer (`bf16=True`) and to scoring
(bf16 autocast), as encoderlab's own runs do.

    python bench/ranking_peer.py --max-train 1000 --epochs 1 --out bench/results/ranking-peer.md
    python bench/ranking_peer.py --trainers zero-shot --max-eval 0            # the sanity anchor only
    python bench/ranking_peer.py --cross-loss listnet --store runs --runs senses-cross,senses-bi

The encoderlab rows to compare with (`--store DIR --runs NAME,...`: each name's newest completed run):
    encoderlab rank examples/senses-cross.toml data.max_train=1000 data.max_eval=0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

TRAINERS = ("zero-shot", "st-cross", "st-bi")
SPLITS = ("validation", "test")


# -- data ----------------------------------------------------------------------------------------

def render(left: str, mention: str, right: str, mark: str) -> str:
    """The context as one string, the mention marked as a plain ST user would (no added tokens)."""
    if not mention or mark == "plain":
        return left + mention + right
    if mark == "quotes":
        return f'{left}"{mention}"{right}'
    return f"{left}[{mention}]{right}"


def contexts(split, mark: str) -> list[str]:
    return [render(a, m, b, mark) for a, m, b in zip(split.left, split.mention, split.right)]


def sampled(k_total: int, gold: int, k: int, rng: np.random.Generator) -> list[int]:
    """Candidate positions one training context brings: its gold and k-1 others drawn at random
    (k = 0: all), as encoderlab's ranking.k_train samples them."""
    others = [j for j in range(k_total) if j != gold]
    if k > 0:
        others = [others[j] for j in rng.choice(len(others), min(k - 1, len(others)), replace=False)]
    return [gold] + others


def cross_dataset(split, mark: str, k: int, loss: str, seed: int):
    """Rows for the CrossEncoderTrainer: (query, doc, label) pairs for BCE, or one
    (query, [docs], [labels]) list per context for ListNet."""
    from datasets import Dataset
    rng = np.random.default_rng(seed)
    texts = contexts(split, mark)
    if loss == "listnet":
        docs, labels = [], []
        for i, text in enumerate(texts):
            pick = sampled(len(split.candidates[i]), int(split.labels[i]), k, rng)
            docs.append([split.candidates[i][j] for j in pick])
            labels.append([1.0] + [0.0] * (len(pick) - 1))
        return Dataset.from_dict({"query": texts, "docs": docs, "labels": labels})
    q, d, y = [], [], []
    for i, text in enumerate(texts):
        for n, j in enumerate(sampled(len(split.candidates[i]), int(split.labels[i]), k, rng)):
            q.append(text)
            d.append(split.candidates[i][j])
            y.append(1.0 if n == 0 else 0.0)
    return Dataset.from_dict({"query": q, "doc": d, "label": y})


def bi_dataset(split, mark: str, hard_negatives: bool, seed: int):
    """(anchor, positive[, negative]) rows: the context, its gold definition and optionally one other
    sense of the same word, the hardest negative a plain user has at hand."""
    from datasets import Dataset
    rng = np.random.default_rng(seed)
    rows = {"anchor": contexts(split, mark), "positive": [c[int(g)] for c, g in zip(split.candidates, split.labels)]}
    if hard_negatives:
        keep = [i for i, c in enumerate(split.candidates) if len(c) > 1]   # one-sense words have no negative
        rows = {k: [v[i] for i in keep] for k, v in rows.items()}
        rows["negative"] = [split.candidates[i][sampled(len(split.candidates[i]), int(split.labels[i]), 2, rng)[1]]
                            for i in keep]
    return Dataset.from_dict(rows)


# -- training ------------------------------------------------------------------------------------

def wall_budget(seconds: float):
    """A TrainerCallback that stops training once `seconds` of wall time are spent (0 = no limit) and
    remembers the steps taken and the training seconds."""
    from transformers import TrainerCallback

    class WallBudget(TrainerCallback):
        def __init__(self):
            self.start, self.steps, self.stopped = 0.0, 0, False

        def on_train_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.steps = state.global_step
            if seconds and time.perf_counter() - self.start >= seconds:
                self.stopped = control.should_training_stop = True
    return WallBudget()


def train_args(cls, args, out: str, batch: int, bf16: bool, **extra):
    """The same optimiser settings for both ST trainers (encoderlab's defaults: AdamW, linear schedule,
    10% warmup, weight decay 0.01) and nothing the bench does not measure: no eval, checkpoints, logs."""
    return cls(output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=batch,
               learning_rate=args.lr, warmup_steps=0.1, weight_decay=0.01, seed=args.seed, bf16=bf16,
               use_cpu=True, eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
               disable_tqdm=True, dataloader_num_workers=0, **extra)


def train_cross(folder: str, data, args, bf16: bool):
    """CrossEncoderTrainer with BCE pairs or ListNet lists; returns (model, seconds, steps, stopped)."""
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder import losses
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments
    model = CrossEncoder(folder, num_labels=1, max_length=2 * args.max_length)
    ds = cross_dataset(data.train, args.mark, args.k_train, args.cross_loss, args.seed)
    if args.cross_loss == "listnet":
        loss, batch = losses.ListNetLoss(model), args.batch_size
    else:   # pairs: as many per step as encoderlab's batch of contexts x k_train candidates
        per_ctx = args.k_train or float(np.mean([len(c) for c in data.train.candidates]))
        loss, batch = losses.BinaryCrossEntropyLoss(model), max(1, round(args.batch_size * per_ctx))
    return _run(CrossEncoderTrainer, CrossEncoderTrainingArguments, model, ds, loss, args, batch, bf16)


def train_bi(folder: str, data, args, bf16: bool):
    """SentenceTransformerTrainer with MultipleNegativesRankingLoss; returns (model, seconds, steps, stopped)."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    model = SentenceTransformer(folder)
    model.max_seq_length = args.max_length
    ds = bi_dataset(data.train, args.mark, args.hard_negatives, args.seed)
    return _run(SentenceTransformerTrainer, SentenceTransformerTrainingArguments, model, ds,
                losses.MultipleNegativesRankingLoss(model), args, args.batch_size, bf16,
                batch_sampler=BatchSamplers.NO_DUPLICATES)


def _run(trainer_cls, args_cls, model, ds, loss, args, batch: int, bf16: bool, **extra):
    budget = wall_budget(args.max_seconds)
    with tempfile.TemporaryDirectory() as out:
        trainer = trainer_cls(model=model, args=train_args(args_cls, args, out, batch, bf16, **extra),
                              train_dataset=ds, loss=loss, callbacks=[budget])
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    model.eval()
    return model, seconds, budget.steps, budget.stopped


# -- scoring -------------------------------------------------------------------------------------

def autocast(bf16: bool):
    import torch
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def cross_scores(model, split, mark: str, batch: int, bf16: bool) -> list[np.ndarray]:
    """Every (context, candidate) pair of the split scored in one predict call, cut back per context."""
    texts = contexts(split, mark)
    pairs = [(t, c) for t, cands in zip(texts, split.candidates) for c in cands]
    with autocast(bf16):
        flat = np.asarray(model.predict(pairs, batch_size=batch, show_progress_bar=False), dtype=np.float64)
    return np.split(flat, np.cumsum([len(c) for c in split.candidates])[:-1])


def bi_scores(model, split, mark: str, batch: int, bf16: bool) -> list[np.ndarray]:
    """Cosine of each context with each of its candidates (unique candidate texts encoded once)."""
    uniq = sorted({c for cands in split.candidates for c in cands})
    pos = {c: i for i, c in enumerate(uniq)}
    with autocast(bf16):
        ctx = model.encode(contexts(split, mark), batch_size=batch, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False).astype(np.float64)
        cand = model.encode(uniq, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False).astype(np.float64)
    return [cand[[pos[c] for c in cands]] @ ctx[i] for i, cands in enumerate(split.candidates)]


def evaluate(scores: list[np.ndarray], split) -> dict:
    """encoderlab's metric on padded (N, K) scores: gold rank (ties against the gold) -> metrics.ranking."""
    from encoderlab import metrics
    k = max(len(s) for s in scores)
    grid = np.full((len(scores), k), -np.inf)
    for i, s in enumerate(scores):
        grid[i, :len(s)] = s
    return metrics.ranking(metrics.gold_ranks(grid, np.asarray(split.labels)), list(split.domains), ks=(1,))


# -- rows and table ------------------------------------------------------------------------------

def row(name: str, what: str, res: dict, seconds: float | None, steps: int | None) -> dict:
    out = {"row": name, "what": what, "train_s": seconds, "steps": steps}
    for sp, m in res.items():
        out[f"{sp}_acc"], out[f"{sp}_mrr"] = m["accuracy"], m["mrr"]
        out.update({f"{sp}_acc/{d}": p["accuracy"] for d, p in m["per_domain"].items()})
        out[f"{sp}_n"] = m["n"]
    return out


def stored_rows(store_dir: str, names: list[str]) -> list[dict]:
    """encoderlab's completed runs beside the peer rows: test accuracy overall (run.info) and per
    domain (the last test event's `accuracy/<domain>` metrics, as analysis/ranking.py reads them);
    train seconds = the sum of its train events' `seconds` (the loop, without its evaluations)."""
    from encoderlab.analysis.facts import read_facts
    from encoderlab.store.runs import RunStore
    store = RunStore(store_dir)
    try:
        out = []
        for name in names:
            run = store.get(name)
            f = read_facts([run])[0]
            res = {}
            for sp in SPLITS:
                m = (f.last(sp) or {}).get("metrics", {})
                if "accuracy" in m:
                    res[sp] = {"accuracy": m["accuracy"], "mrr": m.get("mrr", float("nan")), "n": m.get("n", ""),
                               "per_domain": {k.split("/", 1)[1]: {"accuracy": v} for k, v in m.items()
                                              if k.startswith("accuracy/")}}
            if "test" in res and "test_accuracy" in run.info:
                res["test"]["accuracy"] = run.info["test_accuracy"]
            train = [e for e in f.events if e.get("split") == "train"]
            seconds = sum(e["metrics"].get("seconds", 0.0) for e in train) if train else None
            mode = f.flat.get("ranking.mode", "?")
            out.append(row(f"encoderlab {name}", f"run {run.id} ({mode})", res, seconds,
                           run.info.get("steps_done")))
        return out
    finally:
        store.close()


def table(rows: list[dict]) -> str:
    """Markdown: one line per row; accuracy@1 per domain, accuracy@1 and MRR per split, train seconds."""
    doms = {sp: sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith(f"{sp}_acc/")}) for sp in SPLITS}
    cols = [("row", "row"), ("what", "what")]
    for sp in SPLITS:
        cols += [(f"{sp}_acc/{d}", f"{sp} {d} acc@1") for d in doms[sp]]
        cols += [(f"{sp}_acc", f"{sp} acc@1"), (f"{sp}_mrr", f"{sp} MRR")]
    cols += [("train_s", "train s"), ("steps", "steps")]

    def cell(k: str, v) -> str:
        if v is None or v == "":
            return ""
        if isinstance(v, float):
            return "nan" if v != v else (f"{v:.1f}" if k == "train_s" else f"{v:.3f}")
        return str(v)
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(k, r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def machine_lines(threads: int, requested: str) -> tuple[list[str], bool]:
    """What ran where, from encoderlab.machine (as `encoderlab doctor` states it); and whether bf16 is on."""
    import torch
    from encoderlab import machine
    n, why = machine.apply_threads(threads)
    prec = machine.resolve(requested, "cpu")
    import sentence_transformers
    import transformers
    return ([f"CPU: {machine.cpu_model()} (torch kernels {machine.capability()})",
             f"threads: {n} ({why}); precision: {prec.reason}",
             f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
             f"torch {torch.__version__}"], prec.name == "bf16")


# -- main ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="builtin:wordnet-senses",
                    help="builtin ranking data for load_ranking (builtin:wordnet-senses, builtin:wordnet-senses-b)")
    ap.add_argument("--model", default="builtin:minilm-l6", help="model.path: builtin:NAME, run:ID or a folder")
    ap.add_argument("--trainers", default=",".join(TRAINERS), help=f"comma-separated, of {', '.join(TRAINERS)}")
    ap.add_argument("--max-train", type=int, default=1000, help="training contexts (encoderlab's seeded cap); 0 = all")
    ap.add_argument("--max-eval", type=int, default=0, help="validation/test contexts each; 0 = all")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--batch-size", type=int, default=8, help="contexts per step (BCE: x k-train pairs)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-seconds", type=float, default=0, help="wall budget of each training; 0 = none")
    ap.add_argument("--k-train", type=int, default=4, help="cross: candidates per training context "
                    "(gold + k-1 of its others); 0 = all")
    ap.add_argument("--cross-loss", choices=("bce", "listnet"), default="bce")
    ap.add_argument("--hard-negatives", action="store_true", help="bi: add one other sense of the word per context")
    ap.add_argument("--mark", choices=("brackets", "quotes", "plain"), default="brackets")
    ap.add_argument("--max-length", type=int, default=32, help="tokens per segment (the cross pair: twice)")
    ap.add_argument("--eval-batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", help="run store holding the encoderlab runs of --runs")
    ap.add_argument("--runs", default="", help="encoderlab run names or ids to print beside the peer rows")
    ap.add_argument("--out", help="also write the Markdown table (with the command and machine) here")
    args = ap.parse_args(argv)
    trainers = [t for t in args.trainers.split(",") if t]
    bad = [t for t in trainers if t not in TRAINERS]
    if bad:
        ap.error(f"--trainers: unknown {', '.join(bad)} (choose from {', '.join(TRAINERS)})")
    if args.runs and not args.store:
        ap.error("--runs needs --store")

    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()        # the classifier head's "newly initialized" report is expected
    hf_logging.disable_progress_bar()
    from encoderlab import config as C
    from encoderlab.data.ranking import load_ranking
    from encoderlab.models.registry import resolve

    about, bf16 = machine_lines(args.threads, args.precision)
    for line in about:
        print(line, flush=True)
    data = load_ranking(C.DataConfig(source=args.data, max_train=args.max_train, max_eval=args.max_eval),
                        C.RankingConfig(candidates="list"))
    folder = str(resolve(args.model))
    print(f"data {args.data}: train {len(data.train)} contexts, validation {len(data.validation)}, "
          f"test {len(data.test)}; model {args.model}", flush=True)

    rows = []
    for name in trainers:
        seconds = steps = None
        if name == "zero-shot":
            from sentence_transformers import SentenceTransformer
            model = SentenceTransformer(folder)
            model.max_seq_length = args.max_length
            scorer, mark, what = bi_scores, "plain", "untrained SentenceTransformer, cosine, no marks"
        elif name == "st-cross":
            model, seconds, steps, stopped = train_cross(folder, data, args, bf16)
            scorer, mark = cross_scores, args.mark
            what = (f"CrossEncoder + {'ListNetLoss' if args.cross_loss == 'listnet' else 'BinaryCrossEntropyLoss'}, "
                    f"k={args.k_train or 'all'}" + (", stopped at --max-seconds" if stopped else ""))
        else:
            model, seconds, steps, stopped = train_bi(folder, data, args, bf16)
            scorer, mark = bi_scores, args.mark
            what = ("SentenceTransformer + MultipleNegativesRankingLoss"
                    + (" + 1 hard negative" if args.hard_negatives else "")
                    + (", stopped at --max-seconds" if stopped else ""))
        res = {sp: evaluate(scorer(model, getattr(data, sp), mark, args.eval_batch_size, bf16), getattr(data, sp))
               for sp in SPLITS}
        rows.append(row(name, what, res, seconds, steps))
        print(f"{name}: validation acc@1 {res['validation']['accuracy']:.4f}, test acc@1 {res['test']['accuracy']:.4f}"
              + (f", trained {seconds:.1f} s ({steps} steps)" if seconds is not None else ""), flush=True)
    if args.runs:
        rows += stored_rows(args.store, [r for r in args.runs.split(",") if r])

    text = table(rows)
    print("\n" + text)
    if args.out:
        cmd = "python bench/ranking_peer.py " + " ".join(argv if argv is not None else sys.argv[1:])
        head = [f"# ranking peer: sentence-transformers trainers on {args.data}", "", "```", cmd, "```", ""]
        head += [f"- {line}" for line in about]
        head += [f"- marks: {args.mark} (zero-shot: plain); {args.max_length} tokens per segment; "
                 f"epochs {args.epochs}, batch {args.batch_size} contexts, lr {args.lr}, seed {args.seed}", ""]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(head) + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
