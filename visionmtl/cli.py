"""Shared plumbing for the command-line tools: user errors become one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that describe bad input (config, data, checkpoint, weights), not bugs."""
    from visionmtl.api.io import InputError
    from visionmtl.config import ConfigError
    from visionmtl.data import DataError
    from visionmtl.engine.checkpoint import CheckpointError
    from visionmtl.engine.errors import TrainingError
    from visionmtl.models import BackboneError

    return (
        ConfigError,
        DataError,
        CheckpointError,
        TrainingError,
        BackboneError,
        InputError,
        FileNotFoundError,
    )


def run_tool(function: Callable[[], object]) -> int:
    """Call ``function``; print a one-line ``error: ...`` and return 2 for user errors, else 0."""
    try:
        function()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except user_error_types() as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
