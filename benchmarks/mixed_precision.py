"""Mixed-precision check: train the demo model for N steps with train.amp off / bf16 / fp16.

Records, per mode, whether every loss stayed finite, the median step time and the peak memory
(CUDA: torch.cuda.max_memory_allocated per mode; CPU: the process's peak RSS so far, which
only grows across modes), as JSON. fp16 on CPU falls back to bf16 autocast.

    python benchmarks/mixed_precision.py --steps 300 --out docs/amp_benchmark.json [--device cuda]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

from visionmtl.cli import run_tool

if TYPE_CHECKING:
    import torch

    from visionmtl.config import Config


def bench_mode(
    cfg: Config,
    amp: str,
    steps: int,
    device: torch.device,
    channels_last: bool = False,
    compile_model: bool = False,
) -> dict[str, Any]:
    """Train ``steps`` iterations from a fixed seed with ``amp`` (constant lr, the summed losses,
    gradient clipping at ``train.clip_grad_norm``), optionally with the model and inputs in
    channels-last layout and the model compiled; return timings and loss health."""
    import torch
    from torch.utils.data import DataLoader

    from visionmtl.data import SIZE_DIVISOR, Collator
    from visionmtl.data.batching import DeviceInput
    from visionmtl.engine.optim import build_optimizer
    from visionmtl.engine.trainer import build_datasets, dataset_classes, seed_everything
    from visionmtl.models import build_model
    from visionmtl.models.backbone import input_normalization, resolve_backbone_defaults
    from visionmtl.precision import autocast, make_scaler

    cfg = resolve_backbone_defaults(cfg)  # input statistics and frozen parts, as train() does
    seed_everything(0)
    train_set = build_datasets(cfg)
    classes = dataset_classes(cfg, train_set)
    model = build_model(cfg.model, classes, cfg.eval, sharing=cfg.mtl.sharing).to(device).train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    to_device = DeviceInput(*input_normalization(cfg), device, channels_last)
    optimizer = build_optimizer(model, cfg.train)
    forward = torch.compile(model) if compile_model else model
    scaler = make_scaler(device, amp)
    loader = DataLoader(
        train_set,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        collate_fn=Collator(SIZE_DIVISOR),
        num_workers=2,
        drop_last=True,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, finite, last_losses = [], True, {}
    # ``steps`` batches, reshuffled each time the loader is gone through
    batches = itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), steps)
    for images, targets in batches:
        images, targets = to_device(images, targets)
        start = time.perf_counter()
        with autocast(device, amp):
            losses = forward(images, targets)
        total = sum(v.float() for v in losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        finite = finite and bool(torch.isfinite(total))
        last_losses = {k: round(float(v.detach()), 4) for k, v in losses.items()}
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "amp": amp,
        "channels_last": channels_last,
        "compile": compile_model,
        "images_per_s": round(cfg.data.batch_size / statistics.median(times[5:] or times), 2),
        "first_step_s": round(times[0], 2),
        "steps": steps,
        "all_losses_finite": finite,
        "median_step_ms": round(1000 * statistics.median(times[5:] or times), 2),
        "peak_memory_mib": round(peak, 1),
        "final_losses": last_losses,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/shapes_demo.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--modes", nargs="+", default=["off", "bf16", "fp16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="docs/amp_benchmark.json")
    args = parser.parse_args(argv)

    def run() -> None:
        import torch

        from visionmtl.config import load_config
        from visionmtl.data import generate_shapes
        from visionmtl.engine.rundir import environment_info
        from visionmtl.engine.trainer import resolve_device

        cfg = load_config(args.config)
        generate_shapes(Path(cfg.data.train_ann).parents[1])  # <dir>/annotations/train.json
        device = resolve_device(args.device)
        results = [bench_mode(cfg, mode, args.steps, device) for mode in args.modes]
        report = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "environment": environment_info(),
            "results": results,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        for r in results:
            print(
                f"{r['amp']:>5}: finite={r['all_losses_finite']} step {r['median_step_ms']} ms, peak {r['peak_memory_mib']} MiB"
            )

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
