"""Describe the config fields: visionmtl config --help-fields [--out FILE.md].

Prints the config reference as Markdown: every key (dotted, as in --set), its type or allowed
values, default and description, one table per section, all read from the config classes
(visionmtl/config/schema.py). With --out it writes the file instead; docs/config_reference.md is
`visionmtl config --help-fields --out docs/config_reference.md` (make docs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from visionmtl.cli import run_tool


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--help-fields", action="store_true", help="the reference of every config field (Markdown)"
    )
    parser.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    args = parser.parse_args(argv)
    if not args.help_fields:
        parser.error("nothing to do: give --help-fields")

    def run() -> None:
        from visionmtl.config.reference import config_reference

        text = config_reference()
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"wrote {args.out}")
        else:
            sys.stdout.write(text)

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
