"""CPU inference against its own floor and against Mask R-CNN: det+sem+inst, 80 classes, 100
detections per image (every model at random init with its score threshold at 0, so NMS keeps 100).

For each input size: median ms per 640x480 photo through :class:`Predictor` (preprocessing,
network, decoding, NMS, mask pasting and the semantic map at the photo's size), the **floor**
(backbone + FPN forward alone on the same preprocessed tensor), the mask head alone on the
photo's detections (RoIAlign and its convolutions: the work the floor leaves out), and
torchvision's Mask R-CNN
(MobileNetV2-FPN, resizing to that short side, 81 classes) on the same photo. Then one
4032x3024 photo through the Predictor: ms and the growth of peak RSS it causes.

    python benchmarks/inference_floor.py --sizes 384 640 --threads 1 --out runs/inference_floor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import numpy as np  # noqa: E402
import torch  # noqa: E402

NUM_CLASSES = 80


def median_ms(call: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    """Set the peak RSS (VmHWM) to the current RSS (Linux >= 4.0: ``clear_refs`` value 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the growth is then counted from the process's earlier peak


def build_predictor(size: int) -> Any:
    from visionmtl.api import Predictor
    from visionmtl.config import load_config
    from visionmtl.models import build_model
    from visionmtl.models.backbone import resolve_backbone_defaults
    from visionmtl.structures import ClassSpec

    overrides = [
        "model.backbone.name=mobilenetv2_100",
        "model.backbone.pretrained=false",
        "model.tasks=[det,sem,inst]",
        f"data.image_size={size}",
        "eval.score_thresh=0.0",
    ]
    cfg = resolve_backbone_defaults(load_config(None, overrides))
    torch.manual_seed(0)
    model = build_model(cfg.model, ClassSpec.numbered(NUM_CLASSES), cfg.eval)
    return Predictor(model, cfg, batch_size=1)


def build_maskrcnn(size: int) -> Any:
    from benchmarks.maskrcnn_peer import build_peer_maskrcnn
    from benchmarks.peer_recipe import PeerRecipe

    recipe = PeerRecipe(min_size=size, max_size=max(800, size * 4 // 3))
    torch.manual_seed(0)
    model = build_peer_maskrcnn(NUM_CLASSES, None, recipe).eval()
    model.roi_heads.score_thresh = 0.0
    return model


def _mask_head_inputs(
    predictor: Any, padded: torch.Tensor, image_size: tuple[int, int], result: Any
) -> tuple[Any, Any]:
    """The pyramid maps the mask head reads (of ``padded``, the photo resized to
    ``image_size``) and ``result``'s boxes, scaled from the photo to that size, as RoIs."""
    from visionmtl.models.heads.detection import scale_boxes
    from visionmtl.models.heads.instance import boxes_to_rois
    from visionmtl.models.postprocess import mask_features

    features = mask_features(predictor.model.raw_outputs(padded))
    boxes = scale_boxes(torch.from_numpy(result.boxes), result.image_size, image_size)
    return features, boxes_to_rois([boxes])


def measure_size(size: int, photo: np.ndarray, repeats: int) -> dict[str, Any]:
    predictor = build_predictor(size)
    results = predictor(photo)
    image = predictor.transform(photo)["image"]
    padded, _ = predictor.collate([(image, {})])
    with torch.no_grad():
        full = median_ms(lambda: predictor(photo), repeats)
        floor = median_ms(lambda: predictor.model.features(padded), repeats)
        features, rois = _mask_head_inputs(predictor, padded, tuple(image.shape[-2:]), results[0])
        mask_head = median_ms(lambda: predictor.model.mask_logits(features, rois), repeats)
        peer = build_maskrcnn(size)
        tensor = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
        peer_out = peer([tensor])[0]
        peer_ms = median_ms(lambda: peer([tensor]), repeats)
    return {
        "size": size,
        "detections": len(results[0].boxes),
        "peer_detections": len(peer_out["boxes"]),
        "predictor_ms": full,
        "floor_ms": floor,
        # the mask head alone on the image's detections (RoIAlign + its convolutions): work the
        # floor does not include, and that grows with the detections
        "mask_head_ms": mask_head,
        "maskrcnn_ms": peer_ms,
        "predictor_over_floor": full / floor,
        "predictor_over_maskrcnn": full / peer_ms,
    }


def measure_large_photo(size: int, repeats: int) -> dict[str, Any]:
    photo = np.random.default_rng(1).integers(0, 256, (3024, 4032, 3), dtype=np.uint8)
    predictor = build_predictor(size)
    _reset_peak_rss()  # the rows before may have peaked higher: count from the RSS now
    before = _peak_rss_mb()
    with torch.no_grad():
        results = predictor(photo)
        ms = median_ms(lambda: predictor(photo), repeats, warmup=0)
    return {
        "size": size,
        "photo": "4032x3024",
        "detections": len(results[0].boxes),
        "predictor_ms": ms,
        "peak_rss_growth_mb": _peak_rss_mb() - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[384, 640])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photo = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rows = [measure_size(size, photo, args.repeats) for size in args.sizes]
    rows.append(measure_large_photo(args.sizes[-1], max(3, args.repeats // 5)))
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
