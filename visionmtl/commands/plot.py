"""Draw a run's training curves: visionmtl plot RUN_DIR [--out FILE.png].

Reads RUN_DIR/metrics.jsonl and writes RUN_DIR/curves.png (redrawn each time: it only shows the
records): loss per task, learning rate, validation metrics per epoch, and over steps each task's
weight, gradient norm, the pairwise gradient cosines and, where logged (mtl.affinity_every), the
lookahead task affinities. Needs matplotlib (visionmtl[plots]).
"""

from __future__ import annotations

import argparse
import sys

from visionmtl.cli import run_tool


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("run_dir", help="a training's output directory (holds metrics.jsonl)")
    parser.add_argument("--out", help="picture path (default: RUN_DIR/curves.png)")
    args = parser.parse_args(argv)

    def run() -> None:
        from visionmtl.engine.curves import plot_curves

        print(f"wrote {plot_curves(args.run_dir, args.out)}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
