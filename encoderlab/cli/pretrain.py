"""The verbs of pretraining: `pretrain` (MLM + NSP / SOP) and `tokenizer train`; the `show` view of a
pretraining run and what `resume` prints for one."""

from __future__ import annotations

import json

from rich.markup import escape

from encoderlab import config as C
from encoderlab.cli.common import (add_verb, console, experiment_flags, format_flag, interrupted, open_store,
                                   print_findings, print_rows, say_machine, show_header)

PRETRAIN_COLUMNS = [("epoch", "epoch"), ("step", "step"), ("train_mlm_loss", "train MLM loss"),
                    ("mlm_loss", "held-out MLM loss"), ("mlm_acc", "masked-token acc"),
                    ("pair_acc", "pair acc"), ("top1_share", "top-1 share"), ("elapsed", "elapsed s")]


def print_warning(w: dict) -> None:
    console.print(f"[yellow]warning[/] {escape(w['title'])}")
    console.print(f"    evidence: {escape(w['evidence'])}")
    console.print(f"    fix: {escape(w['fix'])}")


def pretrain_events(args):
    """The callback printing a pretraining run's warnings and (unless --quiet) held-out evaluations."""
    def on_event(ev):
        if ev["split"] == "warning":
            print_warning(ev["detail"])
        elif ev["split"] == "heldout" and not args.quiet:
            m = ev["metrics"]
            pair = f", pair acc {m['pair_accuracy']:.4f}" if "pair_accuracy" in m else ""
            console.print(f"  epoch {ev['epoch']:.2f} step {ev['step']}: held-out MLM loss {m['mlm_loss']:.4f}, "
                          f"masked-token acc {m['mlm_accuracy']:.4f}{pair}")
    return on_event


def print_pretrain_summary(run, fmt: str = "table") -> None:
    from encoderlab.analysis.tables import final_scores, pretrain_table
    rows = pretrain_table(run)
    final = final_scores(run).get("final_heldout")
    if fmt == "json":
        print(json.dumps({"run": {**run.info, "status": run.status}, "epochs": rows, "final": final}, indent=2))
        return
    columns = [c for c in PRETRAIN_COLUMNS if c[0] != "pair_acc" or any(r.get("pair_acc") is not None for r in rows)]
    print_rows(rows, columns, fmt, title=f"pretraining run {run.id}")
    if final and fmt == "table":
        H = run.info.get("data", {}).get("unigram_entropy")
        pair = f", {run.info['data']['objective'].split('+')[1].upper()} accuracy {final['pair_accuracy']:.4f}" \
            if "pair_accuracy" in final else ""
        ref = f" (unigram entropy of the corpus: {H:.4f})" if H is not None else ""
        console.print(f"held-out MLM loss [bold]{final['mlm_loss']:.4f}[/]{ref}, masked-token accuracy "
                      f"[bold]{final['mlm_accuracy']:.4f}[/]{pair}; best checkpoint {final.get('checkpoint', '-')}",
                      soft_wrap=True)


def after_pretrain(args, run) -> None:
    """After a pretraining run: diagnose it, print its summary and how to fine-tune its model."""
    from encoderlab.analysis import diagnose
    diagnose.write(run)
    print_pretrain_summary(run, "json" if args.json else "table")
    if not args.json:
        console.print(f"stored in [bold]{run.dir}[/] (model/ loads with AutoModel.from_pretrained)", soft_wrap=True)
        console.print(f"fine-tune it: encoderlab run exp.toml model.path=run:{run.id}", soft_wrap=True)
        console.print(f"the same architecture from random init: model.path=run:{run.id} model.init=random",
                      soft_wrap=True)


def cmd_pretrain(args):
    from encoderlab.train.pretrain import pretrain
    cfg = C.load(args.file, args.overrides)
    store = open_store(args)
    try:
        if not args.quiet:
            say_machine(cfg)
        run = pretrain(cfg, store, callback=pretrain_events(args), progress=not args.quiet)
    except KeyboardInterrupt:
        interrupted(store)
    after_pretrain(args, run)


def show_pretraining(run, args):
    """`show` of a pretraining run: corpus, held-out history, diagnostics."""
    from encoderlab.analysis import diagnose
    if args.format != "table":
        print_pretrain_summary(run, args.format)
        return
    show_header(run, args)
    d = run.info.get("data") or {}
    if d:
        console.rule("corpus")
        console.print(f"{d['objective']}; {d['sentences']:,} lines in {d['documents']:,} documents -> "
                      f"{d['sizes']['train']:,} training / {d['sizes']['heldout']:,} held-out examples "
                      f"({d['pairs']['train']:,} / {d['pairs']['heldout']:,} sentence pairs); vocabulary "
                      f"{d['vocab_size']:,}; unigram entropy {d['unigram_entropy']:.3f}; {d['duplicate_share']:.1%} "
                      f"duplicate lines; {d['parameters']:,} parameters", markup=False)
    console.rule("history")
    print_pretrain_summary(run)
    console.rule("diagnostics")
    print_findings(diagnose.load_or_compute(run), show_info=True)


def cmd_tokenizer_train(args):
    from encoderlab.data.corpus import read_corpus
    from encoderlab.encode import vocab as V
    corpus = read_corpus(args.corpus, text=args.text, text_pair=args.text_pair)
    tok = V.train(corpus, args.kind, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                  lowercase=not args.cased, unknown_ids=args.unknown_ids, max_length=args.max_length)
    folder = V.save(tok, args.output)
    d = {**V.describe(tok, corpus), "folder": str(folder)}
    if args.format == "json":
        print(json.dumps(d, indent=2))
        return
    if args.format != "table":
        print_rows([d], [(k, k) for k in d], args.format)
        return
    example = corpus.sentences[0]
    tokens = tok.convert_ids_to_tokens(tok(example)["input_ids"])
    what = {"wordpiece": "a WordPiece tokenizer", "bpe": "a byte-level BPE tokenizer",
            "unigram": "a Unigram tokenizer", "ids": "an ID vocabulary"}[args.kind]
    console.print(f"trained {what}: {d['vocab_size']:,} tokens (5 special) from {d['sentences']:,} lines "
                  f"in {d['documents']:,} document{'s' if d['documents'] != 1 else ''}", markup=False)
    console.print(f"{d['tokens_per_sentence']:.1f} tokens per line; [UNK] is {d['unk_share']:.2%} of the tokens"
                  + (f"; unknown IDs: {d['unknown_ids']}" if d["unknown_ids"] else ""), markup=False)
    shown = example if len(example) <= 40 else example[:37] + "..."
    console.print(f"e.g. {shown!r} -> {' '.join(tokens[:12])}{' ...' if len(tokens) > 12 else ''}", markup=False)
    console.print(f"saved to {folder} (tokenizer.json + tokenizer_config.json)", markup=False, soft_wrap=True)
    console.print(f"use it: model.tokenizer = \"{folder}\"", markup=False, soft_wrap=True)


def add_verbs(sub) -> None:
    p = add_verb(sub, "pretrain", cmd_pretrain, "pretrain an encoder with masked language modelling "
                 "(+ NSP / SOP) on your corpus; the run's model fine-tunes as model.path = \"run:ID\"",
                 "encoderlab pretrain examples/anon-pretrain.toml train.epochs=1")
    experiment_flags(p, "experiment TOML file ([data] corpus, [model], [train], [pretrain])")

    p = add_verb(sub, "tokenizer", None, "train a tokenizer or ID vocabulary on your corpus",
                 "encoderlab tokenizer train corpus.txt --kind wordpiece --vocab-size 8000 -o my-tokenizer")
    tsub = p.add_subparsers(dest="tokenizer_verb", required=True, metavar="VERB")
    p = add_verb(tsub, "train", cmd_tokenizer_train,
                 "train a WordPiece / BPE / Unigram tokenizer, or an ID vocabulary for whitespace-separated "
                 "integer tokens; saved in Hugging Face format (AutoTokenizer.from_pretrained loads it)",
                 "encoderlab tokenizer train corpus.txt --kind wordpiece --vocab-size 8000 -o my-tokenizer\n"
                 "  encoderlab tokenizer train ids.tsv --text tokens --kind ids --unknown-ids error "
                 "--min-frequency 1 -o my-ids")
    p.add_argument("corpus", nargs="+", help=".txt files (one sentence per line) or csv/tsv/jsonl/parquet tables")
    p.add_argument("-o", "--output", required=True, help="folder to write the tokenizer to")
    p.add_argument("--kind", default="wordpiece", choices=["wordpiece", "bpe", "unigram", "ids"],
                   help="subword model, or ids: one token per whitespace-separated integer")
    p.add_argument("--vocab-size", type=int, default=0,
                   help="tokens incl. the 5 special ones (default 8000; ids: every frequent-enough ID)")
    p.add_argument("--min-frequency", type=int, default=2, help="keep tokens / IDs seen at least this often")
    p.add_argument("--text", default="text", help="column of a table holding the text (default 'text')")
    p.add_argument("--text-pair", default="", help="a second text column of a table, also read")
    p.add_argument("--cased", action="store_true", help="keep upper case (subword kinds lowercase by default)")
    p.add_argument("--unknown-ids", default="unk", choices=["unk", "error"],
                   help="ids: an ID outside the vocabulary becomes [UNK], or is an error naming file and row")
    p.add_argument("--max-length", type=int, default=512, help="model_max_length stored with the tokenizer")
    format_flag(p)
