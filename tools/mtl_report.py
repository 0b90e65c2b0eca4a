"""Multi-task vs single-task report: how the tasks help or hurt each other.

python tools/mtl_report.py --config configs/pennfudan.yaml [--set KEY=VALUE ...]
    [--methods fixed uncertainty dwa gradnorm pcgrad cagrad] [--sharing hard adapters]
    [--models METHOD/SHARING ...] [--reuse] [--epochs N] [--threads T] [--out runs/mtl_report]

Trains one single-task baseline per task of ``model.tasks`` with the same config ([det], [sem], and
[det, inst] for the instance task, whose masks need boxes) and one multi-task model per method x
sharing mode (or per ``--models`` entry, e.g. ``fixed/hard pcgrad/hard fixed/adapters``), then
writes ``mtl_report.json`` and ``mtl_report.md`` into ``--out``: each task metric with its relative
change, the multi-task performance delta delta_m, parameters, inference ms/image (Predictor,
batch 1, median over the validation images) and training seconds. The report files are rewritten
after every model; ``--reuse`` skips models already trained into ``--out`` with the identical
config, so a stopped report can be resumed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from visionmtl.cli import run_overrides, run_tool
from visionmtl.config import MTL_METHODS, MTL_SHARING

if TYPE_CHECKING:
    import torch


def predictor_latency_ms(checkpoint: Path, device: torch.device) -> float | None:
    """Median milliseconds per validation image at batch 1 through :class:`Predictor`
    (decoded RGB array to predictions at the original size); None without a validation set."""
    from visionmtl.api import Predictor
    from visionmtl.bench.latency import median_latency_ms
    from visionmtl.data import CocoDataset

    predictor = Predictor.from_checkpoint(checkpoint, device=device, batch_size=1)
    data = predictor.cfg.data
    if not data.val_ann:
        return None
    return median_latency_ms(predictor, CocoDataset(data.val_ann, data.val_images))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/pennfudan.yaml")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument(
        "--methods", nargs="+", default=list(MTL_METHODS), help="mtl.method values (default: all)"
    )
    parser.add_argument(
        "--sharing",
        nargs="+",
        default=["hard"],
        help=f"mtl.sharing values (default: hard; known: {' '.join(MTL_SHARING)})",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="METHOD/SHARING",
        help="exact multi-task models to train instead of every --methods x --sharing pair",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse models already trained into --out with the identical config (the data "
        "files themselves are not compared)",
    )
    parser.add_argument("--epochs", type=int, help="epochs for every model (train.epochs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", default="runs/mtl_report", help="output directory")
    args = parser.parse_args(argv)

    def run() -> None:
        from visionmtl.config import load_config
        from visionmtl.engine.errors import TrainingError
        from visionmtl.engine.mtl_report import format_report, run_report

        cfg = load_config(args.config, run_overrides(args.set, args.epochs))
        out = Path(args.out)
        report = run_report(
            cfg,
            args.methods,
            args.sharing,
            out,
            args.threads,
            latency_ms=predictor_latency_ms,
            models=args.models,
            reuse=args.reuse,
        )
        print(format_report(report))
        print(f"wrote {out / 'mtl_report.json'} and {out / 'mtl_report.md'}")
        if report["failures"]:
            failed = "; ".join(f"{name}: {error}" for name, error in report["failures"].items())
            raise TrainingError(f"{len(report['failures'])} multi-task model(s) failed: {failed}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
