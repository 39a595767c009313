"""`python -m encoderlab.cli ARGS` (torchrun's data-parallel processes start the CLI this way)."""

import sys

from encoderlab.cli.main import main

sys.exit(main())
