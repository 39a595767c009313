"""encoderlab command line: one sub-command per verb; parse, call the library, print.

`common` holds what verbs share; one module per verb group (`run`, `runs`, `pretrain`, `analysis`,
`ranking`, `cost`, `series`, `store`, `doctor`; `scale` the scale-out flags); `main` builds the parser."""

from encoderlab.cli.common import QUICKSTART, console, err
from encoderlab.cli.main import build_parser, main

__all__ = ["QUICKSTART", "build_parser", "console", "err", "main"]
