"""Loader before and after: the ratio of visionmtl's training pipeline to torchvision's v2 pipeline
(``benchmarks/loader_throughput.py``'s ``ours`` and ``peer``) for several checkouts, each in its own
process, the checkouts alternating run by run so that machine noise hits them alike.

    python benchmarks/loader_checkouts.py ../old-checkout . --size 512 --runs 3 --passes 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

from benchmarks.cli import emit_json  # noqa: E402

# One run inside a checkout: its own ours/peer, a warm-up pass, then median samples/s.
RUN = """
import json, statistics, sys
sys.path.insert(0, sys.argv[1])
import cv2, torch
torch.set_num_threads(1)
cv2.setNumThreads(1)
from benchmarks.loader_throughput import ours, peer, samples_per_second
size, passes = int(sys.argv[2]), int(sys.argv[3])
mine, theirs = ours(size), peer(size)
samples_per_second(mine), samples_per_second(theirs)
rates = [(samples_per_second(mine), samples_per_second(theirs)) for _ in range(passes)]
print(json.dumps([statistics.median(r) for r in zip(*rates)]))
"""


def one_run(checkout: Path, size: int, passes: int) -> float:
    """Ours / peer samples per second in ``checkout``."""
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(checkout), str(size), str(passes)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    mine, theirs = json.loads(out.strip().splitlines()[-1])
    return mine / theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", type=Path, nargs="+")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    ratios: dict[str, list[float]] = {str(c): [] for c in args.checkouts}
    for _ in range(args.runs):
        for checkout in args.checkouts:
            ratios[str(checkout)].append(one_run(checkout.resolve(), args.size, args.passes))
    rows = [
        {
            "checkout": c,
            "size": args.size,
            "ratios": [round(r, 3) for r in rs],
            "median_ratio": round(statistics.median(rs), 3),
        }
        for c, rs in ratios.items()
    ]
    emit_json(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
