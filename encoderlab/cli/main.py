"""The `encoderlab` parser, built from each verb group's adders, and `main`."""

from __future__ import annotations

import argparse
import os

from encoderlab.cli import analysis, cost, doctor, pretrain, ranking, run, runs, series, store
from encoderlab.cli.common import print_error
from encoderlab.errors import EncoderlabError

# the verbs in the order `encoderlab --help` lists them
ADDERS = (run.add_quickstart_run_sweep, analysis.add_verbs, runs.add_eval, run.add_lrfind, pretrain.add_verbs,
          run.add_resume, runs.add_runs_show_predict, run.add_config_datasets_models, ranking.add_verbs,
          cost.add_verbs, series.add_verbs, store.add_verbs, doctor.add_verbs)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="encoderlab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune, pretrain, compare and store BERT-family encoder experiments.\n\n"
                    "Example:\n  encoderlab quickstart\n  encoderlab run exp.toml train.lr=2e-5 model.init=random")
    ap.add_argument("--store", default=os.environ.get("ENCODERLAB_STORE", "runs"),
                    help="run store folder (default: ./runs or $ENCODERLAB_STORE)")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in ADDERS:
        add(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # our own bars only; HF's shard bars are noise here
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EncoderlabError as e:
        print_error(str(e))
        return 2
    return 0
