"""Shared plumbing for the command-line tools: user errors become one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from visionmtl.errors import VisionMTLError


def run_tool(function: Callable[[], object]) -> int:
    """Call ``function``; print a one-line ``error: ...`` and return 2 for user errors and files
    that cannot be read or written (OSError), else 0."""
    try:
        function()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (VisionMTLError, OSError) as error:  # OSError: names the file (permission, ...)
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
