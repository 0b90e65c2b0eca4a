"""Median seconds of a training step (``trainer.train_step``: data already loaded, forward, losses,
backward, optimizer) of a config, without validation.

Run it from two checkouts (e.g. a ``git worktree`` of an older commit, passing its path with
``--checkout``) one after the other, twice each, to see what a change costs per step:

    python benchmarks/step_time.py --config configs/pennfudan.yaml --set data.image_size=448 --steps 12
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--config", required=True, help="YAML config (its paths relative to the cwd)")
parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides")
parser.add_argument("--steps", type=int, default=12, help="steps; the first 2 are not counted")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--checkout", default=str(Path(__file__).resolve().parents[1]))


def main() -> int:
    args = parser.parse_args()
    sys.path.insert(0, args.checkout)  # that checkout's visionmtl first
    import torch

    from visionmtl.config import load_config
    from visionmtl.engine import trainer

    torch.set_num_threads(args.threads)
    times: list[float] = []
    real_step = trainer.train_step

    def timed_step(*step_args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        start = time.perf_counter()
        result = real_step(*step_args, **kwargs)
        times.append(time.perf_counter() - start)
        return result

    trainer.train_step = timed_step
    overrides = [*args.set, "data.val_ann=", "train.epochs=1", "data.num_workers=0"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, overrides)
        trainer.train(cfg, Path(tmp) / "run", stop_after_steps=args.steps)
    median = statistics.median(times[2:])
    print(f"{args.checkout}: median step {median:.3f} s over {len(times) - 2} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
