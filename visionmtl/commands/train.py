"""Train a multi-task model: visionmtl train CONFIG [--set key=value ...] [--output-dir DIR]
[--resume | --exist-ok]. A run directory that already holds a run is never overwritten: a fresh
training goes to the next free name (runs/exp -> runs/exp2), printed first."""

from __future__ import annotations

import argparse
import sys

from visionmtl.cli import run_tool


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("config", help="YAML config, e.g. configs/shapes_demo.yaml")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config fields"
    )
    parser.add_argument(
        "--output-dir", default=None, help="run directory (default: train.output_dir)"
    )
    # Either continue the run there or replace it, not both.
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    where.add_argument(
        "--exist-ok",
        action="store_true",
        help="train into OUTPUT_DIR even if it holds a run (replacing it), not OUTPUT_DIR2, ...",
    )
    args = parser.parse_args(argv)

    def run() -> None:
        from visionmtl.config import load_config
        from visionmtl.engine.trainer import train

        cfg = load_config(args.config, args.set)
        train(cfg, output_dir=args.output_dir, resume=args.resume, exist_ok=args.exist_ok)

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
