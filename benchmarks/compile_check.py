"""train.compile on this machine: graph breaks, compile time, step time and loss parity vs eager.

Trains the same tiny det+sem+inst model (resnet18, random init, synthetic shapes at 64 px) for
``--steps`` steps twice in one process, eager and with ``train.compile: true`` (inductor), and
compares every step's losses (``train.log_every: 1``). Reported: each mode's first step (the
compiled one includes compiling), and the median step after it (after the first two for the
compiled mode, whose second step may recompile for a new image size).

    python benchmarks/compile_check.py --steps 8 --out runs/compile_check.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import torch  # noqa: E402

from benchmarks.cli import emit_json  # noqa: E402
from visionmtl.config import load_config  # noqa: E402
from visionmtl.data.synthetic import generate_shapes  # noqa: E402
from visionmtl.engine import trainer  # noqa: E402


def run(paths: dict, out: Path, steps: int, compile_: bool) -> dict:
    """Train ``steps`` steps; the per-step losses and step times."""
    overrides = [
        f"data.train_ann={paths['train_ann']}",
        f"data.train_images={paths['train_images']}",
        "data.image_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "model.backbone.name=resnet18",
        "model.backbone.pretrained=false",
        "model.fpn_channels=32",
        "train.epochs=100",
        "train.log_every=1",
        f"train.compile={str(compile_).lower()}",
    ]
    times: list[float] = []
    real_step = trainer.train_step

    def timed_step(*args, **kwargs):  # noqa: ANN002, ANN003
        start = time.perf_counter()
        result = real_step(*args, **kwargs)
        times.append(time.perf_counter() - start)
        return result

    trainer.train_step = timed_step
    try:
        trainer.train(load_config(None, overrides), out, stop_after_steps=steps)
    finally:
        trainer.train_step = real_step
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [{k: v for k, v in r.items() if k.startswith("loss/")} for r in records if "step" in r]
    return {"losses": [r for r in losses if r], "step_s": times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = generate_shapes(Path(tmp) / "data", num_train=32, num_val=4, image_size=64)
        eager = run(paths, Path(tmp) / "eager", args.steps, False)
        compiled = run(paths, Path(tmp) / "compiled", args.steps, True)
    from torch._dynamo.utils import counters

    pairs = zip(eager["losses"], compiled["losses"], strict=False)
    difference = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-8) for a, b in pairs for k in a)
    result = {
        "steps": args.steps,
        "threads": args.threads,
        "torch": torch.__version__,
        "graph_breaks": sum(counters["graph_break"].values()),
        "graph_break_reasons": dict(counters["graph_break"].most_common(5)),
        "eager_first_step_s": eager["step_s"][0],
        "compiled_first_step_s": compiled["step_s"][0],
        "eager_step_s": statistics.median(eager["step_s"][1:]),
        "compiled_step_s": statistics.median(compiled["step_s"][2:]),
        "max_relative_loss_difference": difference,
    }
    result["compiled_over_eager"] = result["compiled_step_s"] / result["eager_step_s"]
    emit_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
