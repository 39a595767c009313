"""CLI verbs for numeric sequences (time series, images): `baselines`."""

from __future__ import annotations

import json

from encoderlab import config as C


def cmd_baselines(args):
    from encoderlab import baselines
    from encoderlab.cli import console, print_rows
    cfg = C.load(args.file, args.overrides)
    rows = baselines.run(cfg, tuple(args.methods.split(",")))
    if args.json:
        console.print_json(json.dumps(rows))
        return
    print_rows(rows, [("method", "method"), ("validation_accuracy", "val acc"), ("test_accuracy", "test acc"),
                      ("seconds", "fit s"), ("skipped", "skipped")], title=f"baselines: {cfg.data.source}")


def add_verbs(sub, _cmd) -> None:
    p = _cmd(sub, "baselines", cmd_baselines,
             "non-transformer baselines (majority, logistic regression, ROCKET) on the experiment's "
             "sequence data and splits, to set beside the encoder's accuracy",
             "encoderlab baselines examples/series-basic-motions.toml")
    p.add_argument("file", help="experiment TOML file (data.task = \"sequence\")")
    p.add_argument("overrides", nargs="*", help="dotted overrides key=value (TOML values)")
    p.add_argument("--methods", default="majority,logreg,rocket", help="comma-separated baselines")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
