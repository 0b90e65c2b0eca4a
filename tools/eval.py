"""Shim kept for existing commands: `python tools/eval.py ARGS` is `visionmtl eval ARGS`."""

import sys

from visionmtl.commands.eval import main

if __name__ == "__main__":
    sys.exit(main())
