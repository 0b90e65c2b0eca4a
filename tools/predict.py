"""Shim kept for existing commands: `python tools/predict.py ARGS` is `visionmtl predict ARGS`."""

import sys

from visionmtl.commands.predict import main

if __name__ == "__main__":
    sys.exit(main())
