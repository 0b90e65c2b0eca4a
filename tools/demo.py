"""Shim kept for existing commands: `python tools/demo.py ARGS` is `visionmtl demo ARGS`."""

import sys

from visionmtl.commands.demo import main

if __name__ == "__main__":
    sys.exit(main())
