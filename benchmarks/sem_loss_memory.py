"""Peak memory and time of the semantic loss (forward + backward) at detection-scale images.

The old loss (and Detectron2's and MMSegmentation's) upsamples the ``[B, C, H/4, W/4]`` logits to
the padded image and takes the cross-entropy there, holding C x H x W floats several times over.
``banded_pixel_losses`` computes the same numbers in bands of rows under checkpointing. Each mode
runs in a fresh process (peak RSS above the process's RSS after its imports and inputs; CPU):

    python benchmarks/sem_loss_memory.py --classes 81 --size 1344 1024 --batch 2 --dice
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

MODES = ("upsample_all", "banded")


def measure(mode: str, classes: int, size: tuple[int, int], batch: int, dice: bool) -> dict:
    """Peak RSS growth (MB), seconds and loss of one forward + backward in this process."""
    import torch
    import torch.nn.functional as F

    from visionmtl.models.heads.semantic import banded_pixel_losses, soft_dice_loss
    from visionmtl.structures import IGNORE_INDEX

    torch.manual_seed(0)
    height, width = size
    logits = torch.randn(batch, classes, height // 4, width // 4, requires_grad=True)
    target = torch.randint(0, classes, (batch, height, width))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if mode == "banded":
        ce, dice_loss = banded_pixel_losses(logits, target, dice)
        loss = ce + dice_loss
    else:  # the whole map at once, as before
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(up, target, ignore_index=IGNORE_INDEX)
        loss = loss + (soft_dice_loss(up, target) if dice else 0)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "peak_mb": round(peak - base),
        "seconds": round(seconds, 3),
        "loss": float(loss),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=81)
    parser.add_argument("--size", type=int, nargs=2, default=[1344, 1024], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dice", action="store_true", help="add the soft Dice loss")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one child process
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    if args.mode:
        import torch

        torch.set_num_threads(args.threads)
        row = measure(args.mode, args.classes, tuple(args.size), args.batch, args.dice)
        print(json.dumps(row))
        return 0
    rows = []
    for mode in MODES:
        command = [sys.executable, __file__, "--mode", mode, *sys.argv[1:]]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]) | vars(args) | {"mode": mode})
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
