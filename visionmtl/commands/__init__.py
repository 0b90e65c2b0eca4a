"""The ``visionmtl`` command: ``visionmtl SUBCOMMAND [ARGS ...]`` (also ``python -m visionmtl``).

Each subcommand is one module of this package with a ``main(argv, prog)``; ``tools/*.py`` are shims
over the same functions, so both spellings take the same arguments, print the same ``--help`` and
return the same exit codes: 0 ok, 1 checked and found bad, 2 could not run (bad input or usage).
"""

from __future__ import annotations

import sys
from types import ModuleType

from visionmtl.commands import advise, check, config, demo, eval, export, plot, predict, train

# The one table of subcommands: name -> module with ``main(argv, prog) -> int``; the first words of
# its docstring (up to ":") are its line in ``visionmtl --help``.
COMMANDS: dict[str, ModuleType] = {
    "train": train,
    "eval": eval,
    "predict": predict,
    "export": export,
    "check": check,
    "plot": plot,
    "demo": demo,
    "advise": advise,
    "config": config,
}


def _usage() -> str:
    lines = [
        "usage: visionmtl SUBCOMMAND [ARGS ...]   (visionmtl SUBCOMMAND --help for its options)",
        "",
    ]
    for name, module in COMMANDS.items():
        summary = (module.__doc__ or "").strip().splitlines()[0].split(":")[0]
        lines.append(f"  {name:<8} {summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``visionmtl SUBCOMMAND ...``; returns the subcommand's exit code (2 for bad usage)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(_usage(), file=sys.stderr)
        print(
            f"visionmtl: error: unknown subcommand {name!r} (choose from {', '.join(COMMANDS)})",
            file=sys.stderr,
        )
        return 2
    try:
        return COMMANDS[name].main(rest, prog=f"visionmtl {name}")
    except SystemExit as exit_:  # argparse: --help (0) and usage errors (2)
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)  # sys.exit("message")
        return 1
