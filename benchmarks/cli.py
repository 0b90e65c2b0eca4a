"""Command-line plumbing shared by the benchmark scripts (``visionmtl.cli.run_tool`` does the
error handling)."""

from __future__ import annotations

import argparse
from typing import Any

# The tiny det+sem+inst model of the tests and of the quick benchmarks (seconds on a CPU).
TINY_MODEL: tuple[str, ...] = (
    "model.fpn_channels=32",
    "model.sem.channels=16",
    "model.det.num_convs=1",
    "model.tasks=[det,sem,inst]",
    "model.inst.channels=16",
    "model.inst.num_convs=1",
    "model.inst.roi_size=7",
)


def run_overrides(sets: list[str], epochs: int | None = None, threads: int = 0) -> list[str]:
    """``--set`` overrides plus the ``--epochs`` / ``--threads`` shortcuts."""
    overrides = list(sets)
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if threads > 0:
        overrides.append(f"train.threads={threads}")
    return overrides


def add_peer_arguments(parser: argparse.ArgumentParser, config_example: str, out: str) -> None:
    """The options every ours-vs-peer benchmark takes: --config, --set, --epochs, --threads,
    --out, --skip-peer, --skip-ours."""
    parser.add_argument("--config", required=True, help=f"YAML config, e.g. {config_example}")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument("--epochs", type=int, help="our model's epochs (train.epochs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", default=out, help="output directory")
    parser.add_argument("--skip-peer", action="store_true", help="only our model")
    parser.add_argument("--skip-ours", action="store_true", help="only the peer")


def peer_run_config(args: argparse.Namespace, extra: list[str] | None = None) -> tuple[Any, list]:
    """(config, overrides) of an ours-vs-peer run: torch's thread count set for the whole
    process (the peer trains in it too) and validation only after the last epoch, so its time can
    be taken out of the training time."""
    import torch

    from visionmtl.config import load_config

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    overrides = [*run_overrides(args.set, args.epochs, args.threads), *(extra or [])]
    cfg = load_config(args.config, overrides)
    cfg = load_config(args.config, [*overrides, f"train.eval_every={cfg.train.epochs}"])
    return cfg, overrides


def emit_json(result: Any, out: str | None) -> None:
    """Print a benchmark's result as JSON, and write it to ``out`` when given."""
    import json
    from pathlib import Path

    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
