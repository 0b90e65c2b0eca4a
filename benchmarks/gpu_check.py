"""The GPU check (issue 11): one script, about 10 minutes on one GPU, JSON out.

ResNet-50 det+sem+inst at 800 px, batch 8, on the synthetic shapes set (generated here): images/s,
median step time, first step (compile) time and peak memory for fp32, bf16 and fp16 (+GradScaler),
channels_last on/off and torch.compile on/off (``mixed_precision.bench_mode``, each mode from the
same seed), every loss finite; torchvision's FCOS ResNet-50 FPN on the same batches as the peer
(fp32 and bf16). Every mode runs in this one process, one after the other.

    python benchmarks/gpu_check.py --out runs/gpu_check.json
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check.json   # CPU, tiny: the script runs
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import torch  # noqa: E402

from benchmarks.cli import emit_json  # noqa: E402
from benchmarks.mixed_precision import bench_mode  # noqa: E402
from visionmtl.config import Config, load_config  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs/shapes_demo.yaml"
# (train.amp, channels_last, compile) per mode.
MODES = [
    ("off", False, False),
    ("bf16", False, False),
    ("fp16", False, False),
    ("bf16", True, False),
    ("bf16", False, True),
    ("bf16", True, True),
]
SMOKE_MODES = [("off", False, False), ("bf16", True, False)]


def check_config(paths: dict, size: int, batch: int, backbone: str) -> Config:
    overrides = [
        f"data.train_ann={paths['train_ann']}",
        f"data.train_images={paths['train_images']}",
        "data.val_ann=",
        f"data.image_size={size}",
        f"data.batch_size={batch}",
        "model.tasks=[det,sem,inst]",
        f"model.backbone.name={backbone}",
        "model.fpn_channels=256",
    ]
    return load_config(CONFIG, overrides)


def peer_fcos(cfg: Config, amp: str, steps: int, device: torch.device) -> dict[str, Any]:
    """torchvision's FCOS ResNet-50 FPN (its own resize to the same size, SGD as its reference)
    on the same data: median step time, images/s, peak memory, losses finite."""
    from torch.utils.data import DataLoader
    from torchvision.models.detection import fcos_resnet50_fpn

    from visionmtl.data import SIZE_DIVISOR, Collator
    from visionmtl.engine.trainer import build_datasets
    from visionmtl.precision import autocast

    torch.manual_seed(0)
    size = cfg.data.image_size
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    model.transform.min_size, model.transform.max_size = (size,), size
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(
        build_datasets(cfg),
        batch_size=cfg.data.batch_size,
        shuffle=True,
        collate_fn=Collator(SIZE_DIVISOR),
        num_workers=2,
        drop_last=True,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, finite = [], True
    for images, targets in itertools.islice(itertools.cycle(loader), steps):
        # uint8 from our training loader; torchvision normalises [0, 1] floats itself
        images = list(images.to(device).float() / 255)
        boxes = [
            {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
        ]
        start = time.perf_counter()
        with autocast(device, amp):
            losses = model(images, boxes)
        total = sum(v.float() for v in losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        finite = finite and bool(torch.isfinite(total))
    step = statistics.median(times[5:] or times)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "model": "torchvision fcos_resnet50_fpn",
        "amp": amp,
        "all_losses_finite": finite,
        "median_step_ms": round(1000 * step, 2),
        "images_per_s": round(cfg.data.batch_size / step, 2),
        "peak_memory_mib": None if peak is None else round(peak, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run: the script works")
    parser.add_argument("--steps", type=int, help="steps per mode (default 30; smoke 2)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    smoke = args.smoke
    device = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    steps = args.steps or (2 if smoke else 30)
    size, batch, backbone = (96, 2, "resnet18") if smoke else (800, 8, "resnet50")
    from visionmtl.data import generate_shapes

    with tempfile.TemporaryDirectory() as tmp:
        images = 4 * batch if smoke else 64
        paths = generate_shapes(Path(tmp), num_train=images, num_val=1, image_size=size, seed=0)
        cfg = check_config(paths, size, batch, backbone)
        rows = [
            {"model": f"visionmtl {backbone} det+sem+inst"}
            | bench_mode(cfg, amp, steps, device, channels_last=layout, compile_model=compiled)
            for amp, layout, compiled in (SMOKE_MODES if smoke else MODES)
        ]
        rows += [
            peer_fcos(cfg, amp, steps, device) for amp in (["off"] if smoke else ["off", "bf16"])
        ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit_json({"device": name, "image_size": size, "batch_size": batch, "rows": rows}, args.out)
    return 0 if all(row["all_losses_finite"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
