"""``python -m visionmtl SUBCOMMAND ...``: the same as the ``visionmtl`` console script."""

import sys

from visionmtl.commands import main

sys.exit(main())
