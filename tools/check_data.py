"""Shim kept for existing commands: `python tools/check_data.py ARGS` is `visionmtl check ARGS`."""

import sys

from visionmtl.commands.check import main

if __name__ == "__main__":
    sys.exit(main())
