"""CLI verbs of candidate ranking / entity linking: rank, rank-table, rank-budgets.

Thin: parse, call encoderlab.train.ranking / encoderlab.analysis.ranking, print."""

from __future__ import annotations

import json

from encoderlab import config as C
from encoderlab.cli import scale
from encoderlab.cli.common import (add_verb, console, emit, experiment_flags, format_flag, open_store,
                                   print_findings, print_rows, print_run_summary, show_header)


def print_result(run, fmt_json: bool) -> None:
    """A ranking run's test scores on one line, then one line per domain."""
    from encoderlab.analysis.tables import final_scores
    test = final_scores(run).get("test", {})
    if fmt_json:
        print(json.dumps({"run": run.id, "test": test}, indent=2, default=str))
        return
    keys = [k for k in ("accuracy", "mrr", "recall@1", "recall@8", "recall@64", "retrieval_recall",
                        "normalized_accuracy", "domain_mean/accuracy") if k in test]
    print(f"run {run.id} ({run.status}): " + ", ".join(f"test {k} {test[k]:.4f}" for k in keys))
    for d, s in test.get("per_domain", {}).items():
        print(f"  {d:<16} n={s['n']:<5} " + " ".join(f"{k} {s[k]:.4f}" for k in ("accuracy", "mrr", "recall@8",
                                                                              "recall@64") if k in s))


def show(run, args) -> None:
    """`encoderlab show` of a ranking run: data, per-evaluation history, test per domain, diagnostics."""
    from encoderlab.analysis import diagnose
    if args.format == "json":
        print_run_summary(run, "json")
        return
    show_header(run, args)
    d = run.info.get("data") or {}
    if d:
        console.rule("data")
        sizes = d.get("sizes", {})
        cut = d.get("context_truncated", {})
        mode = d.get("mode") or run.config().ranking.mode     # baselines store only their sizes
        console.print(f"ranking, mode {mode}"
                      + (f", candidates from the {d['candidates']}" if d.get("candidates") else "")
                      + (f" ({d['dictionary_entries']:,} entries)" if d.get("dictionary_entries") else "")
                      + f"; contexts train {sizes.get('train')}, validation {sizes.get('validation')}, test "
                      f"{sizes.get('test')}"
                      + ("; contexts cut: " + ", ".join(f"{k} {v:.1%}" for k, v in cut.items()) if cut else ""),
                      markup=False)
        if d.get("budget_train"):
            b = d["budget_train"]
            console.print(f"train pairs: {b.get('padding_waste', 0):.1%} padding, candidates cut "
                          f"{b.get('candidate_truncated', 0):.1%}", markup=False)
    rows = []
    for ev in run.events():
        if ev.get("split") not in ("train", "validation"):
            continue
        m = ev.get("metrics", {})
        rows.append({"split": ev["split"], "step": ev.get("step"), "epoch": ev.get("epoch"), "loss": m.get("loss"),
                     "accuracy": m.get("accuracy"), "mrr": m.get("mrr"), "recall@8": m.get("recall@8")})
    console.rule("history")
    print_rows(rows, [("split", "split"), ("step", "step"), ("epoch", "epoch"), ("loss", "train loss"),
                      ("accuracy", "acc@1"), ("mrr", "MRR"), ("recall@8", "recall@8")], args.format)
    console.rule("test")
    print_result(run, args.format == "json")
    console.rule("diagnostics")
    print_findings(diagnose.load_or_compute(run), show_info=True)


def cmd_rank(args):
    """One ranking run, or with a [sweep] every point not yet done, through the common sweep
    plan (skip completed, start the rest) on the local or the Ray backend."""
    from encoderlab import sweep as S
    from encoderlab.kinds import recipe
    store = open_store(args)
    if not C.load_raw(args.file).get("sweep"):
        run = recipe("ranking")(C.load(args.file, args.overrides), store, progress=not args.quiet)
        print_result(run, args.json)
        return
    points = S.expand(args.file, args.overrides)
    if args.backend == "ray":
        runs = scale.ray_sweep(args, points, "ranking", "rank")
    else:
        def on_point(i, n, point, action):
            what = {"skip": "skip (done)", "busy": "running elsewhere, skipping"}.get(action, "run")
            print(f"[{i + 1}/{n}] {point.label}: {what}", flush=True)
        runs = S.run_sweep(points, store, kind="ranking", progress=not args.quiet, on_point=on_point)
    for run in runs:
        print_result(run, args.json)
    if points:
        from encoderlab.cli.common import keep_best_models
        keep_best_models(args, store, points[0].cfg.group, say=not args.json)


def cmd_rank_table(args):
    from encoderlab.analysis import ranking as AR
    from encoderlab.analysis.select import select
    runs = select(open_store(args), group=args.group, ids=args.runs or None, name=args.name)
    if not runs:
        from encoderlab.errors import StoreError
        raise StoreError("no completed runs match; see `encoderlab runs`")
    if args.budgets:
        emit(AR.budget_table(runs), args.format)
    elif args.e2e:
        emit(AR.e2e_table(runs), args.format)
    elif args.stages:
        emit(AR.stage_table(runs, args.split), args.format)
    else:
        emit(AR.domain_table(runs, args.metric, args.split), args.format)
    if args.figure:
        modes = {r.id: r.config().ranking.mode for r in runs}
        out = AR.e2e_figure([r for r in runs if modes[r.id] in ("bi", "zero-shot")],
                            [r for r in runs if modes[r.id] == "cross"], args.figure)
        print(f"figure written to {out}")


def cmd_rank_budgets(args):
    from encoderlab.errors import ConfigError
    from encoderlab.train.ranking import budget_report
    try:
        budgets = [tuple(int(x) for x in b.split("/")) for b in args.budgets.split(",")]
        assert all(len(b) == 2 for b in budgets)
    except (ValueError, AssertionError):
        raise ConfigError(f"--budgets '{args.budgets}': expected context/candidate pairs like 192/64,128/128") from None
    rows = budget_report(C.load(args.file, args.overrides), budgets, args.split)
    print_rows(rows, [("budget", "context/candidate"), ("context_truncated", "ctx cut"),
                      ("candidate_truncated", "cand cut"), ("mean_pair_tokens", "tokens/pair"),
                      ("padding_waste", "pad waste"), ("padding_waste_fixed", "pad waste (fixed len)")],
               args.format, title=f"segment budgets on {args.split} (no training)")


def add_verbs(sub) -> None:
    p = add_verb(sub, "rank", cmd_rank, "train and evaluate a ranking run (cross-encoder, bi-encoder or a "
             "baseline, per ranking.mode); with a [sweep] table, every point not yet done",
             "encoderlab rank examples/senses-cross.toml ranking.loss=am-softmax train.threads=1"
                 + scale.ray_examples("rank"))
    experiment_flags(p, "experiment TOML file")
    scale.ray_flags(p)

    p = add_verb(sub, "rank-table", cmd_rank_table, "per-domain and mean-over-domains ranking table of stored "
             "runs (mean ± std over seeds); --budgets: truncation/padding per budget; --e2e: retrieval x "
             "reranking", "encoderlab rank-table --group senses-study --metric accuracy\n"
             "  encoderlab rank-table --group linking --e2e --figure e2e.png")
    p.add_argument("runs", nargs="*", help="run ids (default: all completed runs of the selection)")
    p.add_argument("--group", help="runs of this group (pattern, * wildcard)")
    p.add_argument("--name", help="runs of this name (pattern, * wildcard)")
    p.add_argument("--metric", default="accuracy", help="accuracy, mrr, recall@8, recall@64, ...")
    p.add_argument("--split", default="test", choices=["test", "validation"])
    p.add_argument("--budgets", action="store_true", help="segment-budget table (truncation, padding waste)")
    p.add_argument("--e2e", action="store_true", help="entity linking: retrieval recall x reranking accuracy")
    p.add_argument("--stages", action="store_true", help="each run against its own baseline per domain: a "
                   "cross-encoder's first stage alone, a bi-encoder's starting (zero-shot) weights")
    p.add_argument("--figure", help="also write the end-to-end figure (PNG) to this path")
    format_flag(p, help=None)

    p = add_verb(sub, "rank-budgets", cmd_rank_budgets, "truncation rates and padding waste of context/candidate "
             "token budgets, without training", "encoderlab rank-budgets examples/senses-cross.toml "
             "--budgets 192/64,128/128,64/192")
    p.add_argument("file", help="experiment TOML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides key=value (TOML values)")
    p.add_argument("--budgets", default="192/64,128/128,64/192", help="context/candidate token budgets")
    p.add_argument("--split", default="train", choices=["train", "validation", "test"])
    format_flag(p, help=None)
