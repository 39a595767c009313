"""CLI verbs for cost: bench, truncate, distill, quantize, export, tradeoff. Thin: parse, call, print."""

from __future__ import annotations

import sys

from encoderlab.analysis import render as R
from encoderlab.cli.common import add_verb, after_run, console, err, format_flag, interrupted, open_store


BENCH_COLUMNS = [("target", "model @ runtime"), ("batch_size", "batch"), ("seq_len", "seq len"),
                 ("latency_p50_ms", "p50 ms", 1), ("latency_p95_ms", "p95 ms", 1), ("latency_mean_ms", "mean ms", 1),
                 ("latency_change_pct", "Δ p50 %", 1), ("examples_per_s", "examples/s", 0),
                 ("tokens_per_s", "tokens/s", 0), ("size_mb", "size MB", 1), ("parameters", "params"),
                 ("inference_peak_extra_mb", "peak +MB", 1)]
TRAIN_COLUMNS = [("target", "model"), ("train_tokens_per_s", "train tokens/s", 0),
                 ("train_examples_per_s", "train examples/s", 1), ("train_step_p50_ms", "step p50 ms", 1),
                 ("train_precision", "precision"), ("train_batch_size", "batch")]


def _ints(text: str) -> tuple[int, ...]:
    from encoderlab.errors import ConfigError
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got '{text}'") from None


def cmd_bench(args):
    from encoderlab.cost.bench import bench_targets
    store = open_store(args)
    rows = bench_targets(store, args.targets, batch_sizes=_ints(args.batch_sizes),
                         seq_lens=_ints(args.seq_lens), split=args.split, n_batches=args.batches,
                         rounds=args.rounds, warmup=args.warmup, threads=args.threads,
                         train_steps=args.train_steps, save=not args.no_save)
    if args.format != "table":
        print(R.render(rows, BENCH_COLUMNS + TRAIN_COLUMNS[1:] + [("load_average", "load"), ("threads", "threads")],
                       args.format))
        return
    r0 = rows[0]
    R.print_table(rows, BENCH_COLUMNS, title=f"inference: {r0['threads']} thread(s), {args.rounds} rounds x "
                  f"{args.batches} batches interleaved, load average {r0['load_average']}; Δ vs {r0['reference']}",
                  console=console)
    if args.train_steps:
        seen = {}
        for r in rows:
            if "train_tokens_per_s" in r:
                seen.setdefault(r["target"], r)
        R.print_table(list(seen.values()), TRAIN_COLUMNS, title="training step (forward + backward + AdamW)",
                      console=console)
    if not args.no_save:
        console.print("stored in each run's bench.json; trade-off table: encoderlab tradeoff "
                      + " ".join(t.split("@")[0] for t in args.targets[:1]))


def print_derived(run, results) -> None:
    """A new derived run's scores and, for ONNX, its equivalence with the PyTorch model."""
    from encoderlab.tasks import score_line
    if "accuracy" in results["validation"]:
        console.print(f"[bold]{run.id}[/]  ({run.info.get('runtime')})  validation accuracy "
                      f"{results['validation']['accuracy']:.4f}   test accuracy {results['test']['accuracy']:.4f}")
    else:       # multilabel / regression parents
        console.print(f"[bold]{run.id}[/]  ({run.info.get('runtime')})  validation {score_line(results['validation'])}"
                      f"   test {score_line(results['test'])}", markup=False)
    if "equivalence" in results:
        q = results["equivalence"]
        console.print(f"ONNX (opset {q['opset']}) vs PyTorch fp32 on {q['examples']} test examples: max |logit diff| "
                      f"{q['max_abs_logit_diff']:.2e}, labels agree on {100 * q['label_agreement']:.2f} %")
        if "int8_vs_pytorch" in q:
            i8 = q["int8_vs_pytorch"]
            console.print(f"ONNX int8 vs PyTorch fp32: max |logit diff| {i8['max_abs_logit_diff']:.2e}, labels "
                          f"agree on {100 * i8['label_agreement']:.2f} % (quantization changes the model on purpose)")
        console.print(", ".join(f"{k}: {R.format_value(v / 1e6, 1)} MB" for k, v in q["files"].items()))


def cmd_truncate(args):
    from encoderlab.cost.derive import truncate_run
    store = open_store(args)
    run, results = truncate_run(store, store.get(args.run), args.layers, args.name or "")
    print_derived(run, results)


def cmd_quantize(args):
    from encoderlab.cost.derive import quantize_run
    store = open_store(args)
    run, results = quantize_run(store, store.get(args.run), args.name or "",
                                runtime="torch-int8-legacy" if args.legacy else "torch-int8")
    print_derived(run, results)


def cmd_export(args):
    from encoderlab import kinds
    store = open_store(args)
    parent = store.get(args.run)
    # the format follows the run: ONNX for classifiers, sentence-transformers for ranking runs
    fmt = args.format or ("sentence-transformers" if kinds.kind_of(parent) == "ranking" else "onnx")
    if fmt == "sentence-transformers":
        from encoderlab.cost.stexport import export_sentence_transformers
        if args.int8 or args.opset or args.name:
            from encoderlab.errors import ConfigError
            raise ConfigError("--int8 / --opset / --name belong to --format onnx; "
                              "--format sentence-transformers takes --out")
        print_st(export_sentence_transformers(parent, args.out, index=not args.no_index))
        return
    from encoderlab.cost.derive import export_run
    if args.out:
        from encoderlab.errors import ConfigError
        raise ConfigError("--out belongs to --format sentence-transformers; an ONNX export is a new run")
    run, results = export_run(store, parent, int8=args.int8, name=args.name or "", opset=args.opset)
    print_derived(run, results)


def print_st(check: dict) -> None:
    console.print(f"{check['class']} folder: {check['folder']}", markup=False, soft_wrap=True)
    cut = check["cut_by_budget"]
    console.print(f"checked on {check['contexts']} test contexts ({check['candidates']} candidates, score: "
                  f"{check['score']}): same top-1 on {100 * check['top1_agreement']:.2f} %, max |score diff| "
                  f"{check['max_abs_score_diff']:.2e}")
    if cut["contexts"] or cut["candidates"]:
        console.print(f"  encoderlab's budgets cut {cut['contexts']} contexts and {cut['candidates']} candidates; "
                      "sentence-transformers keeps the head of a text (a cross-encoder's pair: longest first), "
                      "so a cut made otherwise scores differently")
    if "index" in check:
        i = check["index"]
        console.print(f"dictionary index: {i['entries']} entries x {i['dim']} (index/embeddings.npy, "
                      f"index/entries.json; {i['domains']} domains)")


def cmd_distill(args):
    from encoderlab.train.distill import distill, student_config
    store = open_store(args)
    teacher = store.get(args.teacher)
    cfg = student_config(teacher, args.file, args.overrides)

    def on_event(ev):
        if ev["split"] == "validation" and not args.quiet:
            m = ev["metrics"]
            from encoderlab.tasks import score_line
            console.print(f"  epoch {ev['epoch']} step {ev['step']}: val loss {m['loss']:.4f} {score_line(m)}")
    try:
        run = distill(cfg, store, progress=not args.quiet, callback=on_event)
    except KeyboardInterrupt:
        interrupted(then="distillation runs restart (they do not resume)")
    after_run(args, run)


def cmd_tradeoff(args):
    from encoderlab.analysis import tradeoff as TO
    store = open_store(args)
    teacher = store.get(args.teacher)
    on_disk = set(store.ids())      # an index row whose folder was deleted is no family member
    family = [teacher] + [store.get(i) for i in store.descendants(teacher.id) if i in on_disk]
    rows, meta = TO.table(family, session=args.session, batch_size=args.batch_size)
    if not rows:
        err.print(f"no benchmark results for {teacher.id} or runs derived from it; run "
                  f"`encoderlab bench {teacher.id} STUDENT...` first")
        sys.exit(1)
    if args.format == "table":
        R.print_table(rows, TO.COLUMNS, title=TO.caption(meta), console=console)
    else:
        print(R.render(rows, TO.COLUMNS, args.format, title=TO.caption(meta)))


def add_verbs(sub) -> None:
    p = add_verb(sub, "bench", cmd_bench, "inference latency (p50/p95/mean per batch), throughput, size, "
             "parameters and peak memory of runs, measured interleaved in one process; optional training-step "
             "tokens/s; stored in each run's bench.json",
             "encoderlab bench teacher teacher-L2-distill-onnx-int8 --batch-sizes 32 --threads 1\n"
             "  encoderlab bench last@torch last@torch-int8 --seq-lens 16,64 --train-steps 10")
    p.add_argument("targets", nargs="+", metavar="RUN[@RUNTIME]",
                   help="runs (id, prefix, name, 'last') or saved model folders; @torch | @torch-int8 | "
                        "@torch-int8-legacy | @onnx | @onnx-int8 picks "
                        "the runtime (default: the run's own); the first is the reference")
    p.add_argument("--batch-sizes", default="32", help="comma-separated batch sizes (default 32)")
    p.add_argument("--seq-lens", default="0", help="comma-separated fixed sequence lengths; 0 = real data "
                   "batches padded to their longest example (default)")
    p.add_argument("--split", default="validation", choices=["train", "validation", "test"],
                   help="split the real-data batches come from")
    p.add_argument("--batches", type=int, default=20, help="batches per round (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up batches per model (default 3)")
    p.add_argument("--threads", type=int, default=1, help="threads for torch and onnxruntime (default 1)")
    p.add_argument("--train-steps", type=int, default=0, help="also time N training steps of each torch target")
    p.add_argument("--no-save", action="store_true", help="print only; do not write bench.json")
    format_flag(p, help=None)

    p = add_verb(sub, "truncate", cmd_truncate, "new run keeping some encoder layers of a fine-tuned run "
             "(with their weights), scored on validation and test", "encoderlab truncate teacher --layers first:2")
    p.add_argument("run")
    p.add_argument("--layers", required=True, help="first:K | every:N | explicit 0-based list like 0,3,5")
    p.add_argument("--name", help="name of the new run (default <parent>-L<k>)")

    p = add_verb(sub, "distill", cmd_distill, "distill a fine-tuned teacher run into a smaller student run "
             "(soft KL + hard CE, optional hidden-state / attention matching)",
             "encoderlab distill teacher compress.layers=first:2 train.epochs=6 compress.temperature=2")
    p.add_argument("teacher", help="the fine-tuned run to distill from")
    p.add_argument("overrides", nargs="*", help="dotted overrides on the teacher's config (compress.*, train.*, "
                   "model.* with compress.student=model)")
    p.add_argument("--file", help="experiment TOML applied over the teacher's config")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")

    p = add_verb(sub, "quantize", cmd_quantize, "new run served as PyTorch dynamic int8 (Linear layers; torchao "
             "int8 weights x int8 dynamic activations)", "encoderlab quantize teacher-distill")
    p.add_argument("run")
    p.add_argument("--name", help="name of the new run (default <parent>-int8, or <parent>-int8-legacy)")
    p.add_argument("--legacy", action="store_true", help="PyTorch's deprecated torch.ao quantize_dynamic "
                   "(runtime torch-int8-legacy) instead of torchao")

    p = add_verb(sub, "export", cmd_export, "classification run: new run served by ONNX Runtime (dynamic "
             "batch/sequence axes; optional onnxruntime int8), with an equivalence check vs PyTorch on the test "
             "split; ranking run: a sentence-transformers folder (SentenceTransformer or CrossEncoder) in the run, "
             "checked against encoderlab's scores on the test split",
             "encoderlab export teacher-distill --int8\n  encoderlab export my-bi-run --format sentence-transformers")
    p.add_argument("run")
    p.add_argument("--format", choices=["onnx", "sentence-transformers"],
                   help="default: onnx for classification runs, sentence-transformers for ranking runs")
    p.add_argument("--out", help="sentence-transformers: folder to write (default <run>/sentence-transformers)")
    p.add_argument("--no-index", action="store_true", help="sentence-transformers: skip the dictionary index "
                   "(bi-encoder runs with a dictionary)")
    p.add_argument("--int8", action="store_true", help="also quantize with onnxruntime (dynamic int8) and serve that")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's default)")
    p.add_argument("--name")

    p = add_verb(sub, "tradeoff", cmd_tradeoff, "accuracy vs latency / throughput / size of a teacher and the runs "
             "derived from it, from the newest bench session (with %% change and Pareto flags)",
             "encoderlab tradeoff teacher --format markdown")
    p.add_argument("teacher")
    p.add_argument("--session", help="bench session (time stamp) to read; default the newest")
    p.add_argument("--batch-size", type=int, help="setting to show when the session measured several")
    format_flag(p, help=None)
