"""How close the mask head's training targets are to the annotation: crops drawn per box (the
loader's ``mask_crops``) and the old full-size masks (decoded, nearest-resized with the image),
each RoIAligned to 28 x 28 on every box and on a jittered copy of it, against the polygon
rasterised exactly onto each RoI's 28 x 28 grid; and the share of semantic-map pixels on which
the two paths agree. On coco_tiny's training photos (polygons only: crowd RLEs are not
instances), evaluation-size transform at ``--size``; a photo where the transform dropped a box
(under 1 px) is left out of the targets (its boxes no longer pair with its annotations).

    python benchmarks/mask_targets.py --size 512
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.cli import emit_json  # noqa: E402
from benchmarks.loader_throughput import ANN, IMAGES  # noqa: E402


def measure(size: int) -> dict[str, float]:
    from visionmtl.data import CocoDataset, build_transforms
    from visionmtl.models.heads.instance import MaskHead, jitter_boxes

    head = MaskHead(8, 80, [8, 16, 32])  # roi_size 14: 28 x 28 targets
    transform = build_transforms(size, train=False, compact=True)
    crops = CocoDataset(ANN, IMAGES, transform)
    # any callable that is not a Transform gets full-size masks (the old path)
    full = CocoDataset(ANN, IMAGES, lambda *args, **kwargs: transform(*args, **kwargs))
    wrong = {"crops": 0, "full": 0, "between": 0}
    cells = sem_same = sem_pixels = 0
    for index in range(len(crops)):
        image, target = crops[index]
        _, full_target = full[index]
        sem_same += int((target["sem_seg"] == full_target["sem_seg"]).sum())
        sem_pixels += target["sem_seg"].numel()
        info = crops.image_info(index)
        scale = np.array([image.shape[-1] / info["width"], image.shape[-2] / info["height"]] * 2)
        _, _, shapes = crops._parts(index, info["height"], info["width"], True)
        segments = shapes.segments
        if len(target["boxes"]) == 0 or len(segments) != len(target["boxes"]):
            continue
        torch.manual_seed(index)
        boxes = target["boxes"]
        rois = torch.cat([boxes, jitter_boxes(boxes, tuple(image.shape[-2:]), 0.2, 0.5)])
        which = torch.arange(len(boxes)).repeat(2)
        from_crops = head.mask_targets(
            target["mask_crops"][which], rois, target["mask_regions"][which]
        )
        from_full = head.mask_targets(full_target["masks"][which], rois)
        exact = torch.stack(
            [
                torch.from_numpy(segments[k].render(roi / scale, 28, 28).astype(np.float32))
                for k, roi in zip(which.tolist(), rois.numpy(), strict=True)
            ]
        )
        wrong["crops"] += int((from_crops != exact).sum())
        wrong["full"] += int((from_full != exact).sum())
        wrong["between"] += int((from_crops != from_full).sum())
        cells += exact.numel()
    return {
        "size": size,
        "cells": cells,
        "crops_differ_from_exact": round(wrong["crops"] / cells, 4),
        "full_masks_differ_from_exact": round(wrong["full"] / cells, 4),
        "crops_differ_from_full_masks": round(wrong["between"] / cells, 4),
        "semantic_maps_agree": round(sem_same / sem_pixels, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    if not ANN.is_file():
        raise SystemExit(f"{ANN} not found: this benchmark reads ../shared/data/coco_tiny")
    emit_json([measure(args.size)], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
