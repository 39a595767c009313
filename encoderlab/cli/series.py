"""CLI verbs for numeric sequences (time series, images): `baselines`."""

from __future__ import annotations

import json

from encoderlab import config as C
from encoderlab.cli.common import add_verb, console, print_rows


def cmd_baselines(args):
    from encoderlab import baselines
    cfg = C.load(args.file, args.overrides)
    rows = baselines.run(cfg, tuple(args.methods.split(",")))
    if args.json:
        console.print_json(json.dumps(rows))
        return
    print_rows(rows, [("method", "method"), ("validation_accuracy", "val acc"), ("test_accuracy", "test acc"),
                      ("seconds", "fit s"), ("skipped", "skipped")], title=f"baselines: {cfg.data.source}")


def add_verbs(sub) -> None:
    p = add_verb(sub, "baselines", cmd_baselines,
             "non-transformer baselines (majority, logistic regression, ROCKET) on the experiment's "
             "sequence data and splits, to set beside the encoder's accuracy",
             "encoderlab baselines examples/series-basic-motions.toml")
    p.add_argument("file", help="experiment TOML file (data.task = \"sequence\")")
    p.add_argument("overrides", nargs="*", help="dotted overrides key=value (TOML values)")
    p.add_argument("--methods", default="majority,logreg,rocket", help="comma-separated baselines")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
