"""Recommend how to train a config's tasks together: visionmtl advise CONFIG [--minutes M]
[--steps N] [--every K] [--set key=value ...] [--out DIR].

A short probe (at most M minutes: a few timed steps of every balancing method and sharing design,
then up to N training steps with fixed weights that log the tasks' gradient cosines, norm ratios
and lookahead affinity every K steps) and a recommendation: share one network or train apart,
which sharing design, which balancing method and its setting, with the evidence and each
candidate's cost and estimated full-run time. Writes DIR/advice.json and DIR/advice.md (the next
free name when DIR holds advice). The rules are in docs/advisor.md."""

from __future__ import annotations

import argparse
import sys

from visionmtl.cli import run_tool


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("config", help="YAML config of the multi-task training to advise on")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config fields"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="probe budget (default 10)")
    parser.add_argument("--steps", type=int, default=300, help="most probe steps (default 300)")
    parser.add_argument("--every", type=int, default=5, help="steps between measurements")
    parser.add_argument("--out", default="runs/advise", help="output directory")
    args = parser.parse_args(argv)

    def run() -> None:
        from visionmtl.config import load_config
        from visionmtl.engine.probe import advise
        from visionmtl.errors import ConfigError
        from visionmtl.mtl.advice import format_advice

        if args.minutes <= 0 or args.steps < 1 or args.every < 1:
            raise ConfigError("--minutes must be > 0, --steps and --every at least 1")
        cfg = load_config(args.config, args.set)
        if len(cfg.model.tasks) < 2:
            raise ConfigError(f"model.tasks: advice needs two tasks or more, got {cfg.model.tasks}")
        advice, out = advise(cfg, args.out, args.minutes, args.steps, args.every)
        print(format_advice(advice))
        print(f"wrote {out / 'advice.json'} and {out / 'advice.md'}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
