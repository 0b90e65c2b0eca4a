"""COCO evaluation time: pycocotools vs faster-coco-eval (``eval.coco_engine``) on the same results.

A synthetic ground truth with COCO-train statistics (about 7 objects per image, 80 categories,
polygon masks, 1 % crowd) and predictions made from it (every object found with a few pixels of
error and a random score, plus false positives, ``--dets`` per image). Both engines score the
same files through ``visionmtl.evaluation.coco_eval.engine_classes`` (evaluate + accumulate +
summarize, ``bbox`` and ``segm``), in one process, one after the other; the metrics must agree to
1e-4.

    python benchmarks/eval_engines.py --images 500 5000 --out runs/eval_engines.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import numpy as np  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from visionmtl.evaluation.coco_eval import engine_classes  # noqa: E402

CATEGORIES = 80
SIZE = (480, 640)


def _polygon(rng: np.random.Generator, box: np.ndarray, points: int = 12) -> list[float]:
    """A star-ish polygon inside ``box`` [x, y, w, h]."""
    x, y, w, h = box
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radius = rng.uniform(0.6, 1.0, points)
    xs = x + w / 2 + np.cos(angles) * radius * w / 2
    ys = y + h / 2 + np.sin(angles) * radius * h / 2
    return np.stack([xs, ys], 1).ravel().round(1).tolist()


def synthetic_set(images: int, dets: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """(ground-truth dict, results list with RLE segmentations)."""
    rng = np.random.default_rng(seed)
    height, width = SIZE
    gt = {
        "images": [{"id": i, "height": height, "width": width} for i in range(1, images + 1)],
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, CATEGORIES + 1)],
        "annotations": [],
    }
    results = []
    for image_id in range(1, images + 1):
        count = max(1, rng.poisson(7))
        wh = rng.uniform(8, 200, (count, 2))
        xy = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - wh)
        boxes = np.concatenate([xy, wh], 1)
        categories = rng.integers(1, CATEGORIES + 1, count)
        for box, category in zip(boxes, categories, strict=True):
            polygon = _polygon(rng, box)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(category),
                    "bbox": box.round(1).tolist(),
                    "area": float(box[2] * box[3]) * 0.7,
                    "segmentation": [polygon],
                    "iscrowd": int(rng.random() < 0.01),
                }
            )
        extra = max(0, dets - count)
        moved = np.concatenate(
            [boxes + rng.normal(0, 3, boxes.shape), rng.uniform(0, 200, (extra, 4))]
        )
        labels = np.concatenate([categories, rng.integers(1, CATEGORIES + 1, extra)])
        for box, category in zip(moved[:dets], labels[:dets], strict=True):
            box = np.abs(box) + [0, 0, 4, 4]
            rle = mask_utils.merge(mask_utils.frPyObjects([_polygon(rng, box)], height, width))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(category),
                    "bbox": box.round(2).tolist(),
                    "score": float(rng.random()),
                    "segmentation": rle,
                }
            )
    return gt, results


def score(engine: str, gt: dict, results: list[dict], iou_type: str) -> tuple[float, list[float]]:
    """(seconds, the 12 summary stats) of one engine on one IoU type."""
    coco_class, cocoeval_class = engine_classes(engine)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        coco_gt = coco_class()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = cocoeval_class(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        seconds = time.perf_counter() - start
    return seconds, [float(v) for v in evaluator.stats[:12]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--dets", type=int, default=20, help="predictions per image")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    for images in args.images:
        gt, results = synthetic_set(images, args.dets)
        for iou_type in ("bbox", "segm"):
            times, stats = {}, {}
            for engine in ("pycocotools", "faster_coco_eval"):
                times[engine], stats[engine] = score(engine, gt, results, iou_type)
            difference = float(np.max(np.abs(np.subtract(*stats.values()))))
            row = {
                "images": images,
                "iou_type": iou_type,
                "annotations": len(gt["annotations"]),
                "results": len(results),
                **{f"{engine}_s": round(t, 3) for engine, t in times.items()},
                "ratio": round(times["faster_coco_eval"] / times["pycocotools"], 3),
                "AP": round(stats["pycocotools"][0], 4),
                "max_stat_difference": difference,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(row["max_stat_difference"] <= 1e-4 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
