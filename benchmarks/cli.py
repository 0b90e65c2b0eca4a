"""Command-line plumbing shared by the benchmark scripts (``visionmtl.cli.run_tool`` does the
error handling)."""

from __future__ import annotations


def run_overrides(sets: list[str], epochs: int | None = None, threads: int = 0) -> list[str]:
    """``--set`` overrides plus the ``--epochs`` / ``--threads`` shortcuts."""
    overrides = list(sets)
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if threads > 0:
        overrides.append(f"train.threads={threads}")
    return overrides
