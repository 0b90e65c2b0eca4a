"""Shim kept for existing commands: `python tools/train.py ARGS` is `visionmtl train ARGS`."""

import sys

from visionmtl.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
