"""Data set start-up and memory at scale: visionmtl's CocoDataset vs pycocotools' ``COCO()``.

On synthetic COCO-style files with COCO-train statistics (6.9 annotations per image, 22-point
polygons, 1% crowd RLE, 80 categories with COCO's non-contiguous ids), each measurement in a
fresh process with one thread:

- start-up seconds and peak RSS above the process's RSS after its imports, for pycocotools'
  bare ``COCO()`` (the peer), ``CocoDataset(on_invalid="skip")`` with every check (no cache) and
  the same from its cache (``data.cache``, a second start);
- private memory each of 2 forked workers gains over one pass reading every image's record
  (copy-on-read), for our packed storage and for pycocotools' dicts.

    python benchmarks/data_scale.py --images 1000 10000 100000 --out runs/data_scale.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import numpy as np  # noqa: E402

COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


def synthetic_coco(num_images: int, path: Path, seed: int = 0) -> Path:
    """Write a COCO instances file of ``num_images`` images with COCO-train statistics."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        width, height = 640, int(rng.choice([427, 480, 640]))
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height}
        )
        for _ in range(int(rng.poisson(6.9))):
            annotations.append(random_object(rng, len(annotations) + 1, image_id, width, height))
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories()})
    )
    return path


def categories() -> list[dict[str, Any]]:
    """COCO's 80 category ids, with placeholder names."""
    return [{"id": i, "name": f"class{i}", "supercategory": "thing"} for i in COCO_CATEGORY_IDS]


def random_object(
    rng: np.random.Generator, ann_id: int, image_id: int, width: int, height: int
) -> dict[str, Any]:
    """One annotation with COCO-train-like statistics: a box of 8 px to half the image per side,
    a 22-point polygon blob inside it, and 1 % of them crowd RLE boxes."""
    from pycocotools import mask as mask_utils

    w, h = rng.uniform(8, width / 2), rng.uniform(8, height / 2)
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    annotation: dict[str, Any] = {
        "id": ann_id,
        "image_id": image_id,
        "iscrowd": 0,
        "category_id": int(rng.choice(COCO_CATEGORY_IDS)),
        "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
        "area": round(w * h, 2),
    }
    if rng.random() < 0.01:
        mask = np.zeros((height, width), np.uint8, order="F")
        mask[int(y) : int(y + h), int(x) : int(x + w)] = 1
        rle = mask_utils.encode(mask)
        annotation.update(
            iscrowd=1, segmentation={"size": rle["size"], "counts": rle["counts"].decode()}
        )
    else:
        angles = np.linspace(0, 2 * np.pi, 22, endpoint=False)
        radius = 0.5 * (0.8 + 0.2 * rng.random(22))
        xs = x + w * (0.5 + radius * np.cos(angles))
        ys = y + h * (0.5 + radius * np.sin(angles))
        annotation["segmentation"] = [np.round(np.stack([xs, ys], 1).ravel(), 2).tolist()]
    return annotation


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _private_mb() -> float:
    """Private (copied or written) memory of this process, from smaps_rollup."""
    fields = dict(
        line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]
    )
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024


def _load(kind: str, ann_file: Path, cache: Path) -> Any:
    if kind == "pycocotools":
        import contextlib
        import io

        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_file))
    from visionmtl.data import CocoDataset

    return CocoDataset(
        ann_file, ann_file.parent, on_invalid="skip", cache_dir=cache if kind == "cached" else None
    )


def _one_pass(kind: str, loaded: Any) -> None:
    """Read every image's size and its annotations, as a loader's workers do over an epoch."""
    if kind == "pycocotools":
        for image_id, image in loaded.imgs.items():
            _ = image["height"], [a["bbox"] for a in loaded.imgToAnns[image_id]]
        return
    for index in range(len(loaded)):
        _ = loaded.image_info(index)["height"], [a["bbox"] for a in loaded.annotations(index)]


def _worker(kind: str, loaded: Any, queue: Any) -> None:
    before = _private_mb()
    _one_pass(kind, loaded)
    queue.put(_private_mb() - before)


def measure(kind: str, ann_file: Path, cache: Path) -> dict[str, Any]:
    """In this (fresh) process: load ``ann_file`` as ``kind``, then fork 2 workers for one pass."""
    import pycocotools.coco  # noqa: F401 - imports before the baseline, the same for every kind
    import torch

    import visionmtl.data  # noqa: F401

    torch.set_num_threads(1)
    base = _rss_mb()
    start = time.perf_counter()
    loaded = _load(kind, ann_file, cache)
    seconds = time.perf_counter() - start
    peak = _rss_mb("VmHWM") - base
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_worker, args=(kind, loaded, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    growth = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    return {"seconds": seconds, "peak_rss_mb": peak, "worker_growth_mb": max(growth)}


def run(sizes: list[int], work: Path) -> list[dict[str, Any]]:
    """Every size x kind, each in a fresh process; the cached start after the uncached one."""
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sizes:
        ann_file = work / f"synthetic_{size}.json"
        if not ann_file.is_file():
            synthetic_coco(size, ann_file)
        cache = work / f"cache_{size}"
        for kind in ("pycocotools", "visionmtl", "cached"):
            if kind == "cached":  # fill the cache first, then time the second start
                subprocess.run(
                    [sys.executable, __file__, "--measure", "cached", str(ann_file), str(cache)],
                    check=True,
                    capture_output=True,
                )
            env = dict(os.environ, OMP_NUM_THREADS="1")
            output = subprocess.run(
                [sys.executable, __file__, "--measure", kind, str(ann_file), str(cache)],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            row = {"images": size, "kind": kind, **json.loads(output.strip().splitlines()[-1])}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--work", type=Path, default=Path("runs/data_scale"), help="synthetic files and caches"
    )
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    parser.add_argument(
        "--measure", nargs=3, metavar=("KIND", "ANN", "CACHE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.measure:
        kind, ann, cache = args.measure
        print(json.dumps(measure(kind, Path(ann), Path(cache))))
        return
    rows = run(args.images, args.work)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
