"""CPU latency of the ONNX export: OnnxPredictor (ONNX Runtime) against Predictor (PyTorch).

A det+sem+inst model (random init; resnet18 and a 32-channel pyramid by default) is saved, exported
with ``export_onnx`` and run by both predictors on the same synthetic shapes images, one image per
call and one thread each. Reported per image (the median over the images, after 2 warm-up calls;
``benchmarks/latency.py``):
- **end-to-end**: ``predictor(image)``, from the uint8 array to the ``Result`` (preprocessing,
  network, decoding, NMS, mask head and pasting, semantic map at the image's size);
- **network**: the network alone on the preprocessed tensor (``raw_outputs``).

    python benchmarks/onnx_latency.py --images 32 --image-size 64 --out runs/onnx_latency.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.cli import TINY_MODEL, emit_json  # noqa: E402
from benchmarks.latency import median_latency_ms  # noqa: E402

WARMUP = 2


def tiny_overrides(backbone: str, image_size: int) -> list[str]:
    """The tests' tiny model (tests/conftest.py) at ``image_size``."""
    return [
        f"model.backbone.name={backbone}",
        f"data.image_size={image_size}",
        *TINY_MODEL,
    ]


def save_and_export(work_dir: Path, overrides: list[str]) -> tuple[Path, Path]:
    """A random-init checkpoint of the configured model and its ONNX export in ``work_dir``."""
    from visionmtl.api.onnx_export import export_onnx
    from visionmtl.config import load_config
    from visionmtl.engine.checkpoint import save_checkpoint
    from visionmtl.models import build_model
    from visionmtl.models.backbone import resolve_backbone_defaults
    from visionmtl.structures import ClassSpec

    cfg = resolve_backbone_defaults(load_config(None, overrides))
    torch.manual_seed(0)
    model = build_model(cfg.model, ClassSpec.numbered(3), cfg.eval)
    checkpoint = work_dir / "model.pt"
    save_checkpoint(checkpoint, cfg, model)
    export_onnx(checkpoint, work_dir / "onnx")
    return checkpoint, work_dir / "onnx"


def shapes_images(work_dir: Path, count: int, image_size: int) -> list[np.ndarray]:
    """``count`` synthetic shapes images [H, W, 3] uint8."""
    from visionmtl.data.synthetic import generate_shapes

    paths = generate_shapes(work_dir / "shapes", count, 1, image_size=image_size, seed=0)
    files = sorted(Path(paths["train_images"]).iterdir())[:count]
    return [np.asarray(Image.open(path).convert("RGB")) for path in files]


class Items:
    """A list as the data set ``median_latency_ms`` reads (``len``, ``load_image(i)``)."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, index: int) -> Any:
        return self.items[index]


def ms_per_item(call: Callable[[Any], Any], items: Sequence[Any]) -> float:
    """Median ms of ``call(item)`` over ``items``, after ``WARMUP`` untimed calls."""
    for item in items[:WARMUP]:
        call(item)
    return median_latency_ms(call, Items(items))


def measure(images: list[np.ndarray], checkpoint: Path, export_dir: Path) -> dict[str, Any]:
    from visionmtl import OnnxPredictor, Predictor

    torch_predictor = Predictor.from_checkpoint(checkpoint, batch_size=1)
    onnx_predictor = OnnxPredictor.from_export(export_dir, batch_size=1, num_threads=1)
    tensors = [
        torch_predictor.collate([(torch_predictor.transform(image)["image"], {})])[0]
        for image in images
    ]
    with torch.no_grad():
        network_torch = ms_per_item(torch_predictor.model.raw_outputs, tensors)
    network_onnx = ms_per_item(onnx_predictor.raw_outputs, tensors)
    end_to_end_torch = ms_per_item(torch_predictor, images)
    end_to_end_onnx = ms_per_item(onnx_predictor, images)
    detections = sum(len(result) for result in onnx_predictor(images)) / len(images)
    return {
        "images": len(images),
        "image_shape": list(images[0].shape),
        "detections_per_image": detections,
        "end_to_end_ms": {"torch": end_to_end_torch, "onnxruntime": end_to_end_onnx},
        "network_ms": {"torch": network_torch, "onnxruntime": network_onnx},
        "end_to_end_ratio": end_to_end_onnx / end_to_end_torch,
        "network_ratio": network_onnx / network_torch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp)
        checkpoint, export_dir = save_and_export(
            work_dir, tiny_overrides(args.backbone, args.image_size)
        )
        images = shapes_images(work_dir, args.images, args.image_size)
        report = {"backbone": args.backbone, **measure(images, checkpoint, export_dir)}
    emit_json(report, args.out)


if __name__ == "__main__":
    main()
