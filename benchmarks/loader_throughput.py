"""Samples per second of one data-loading process: visionmtl's pipeline vs torchvision's v2.

On real COCO photos (``../shared/data/coco_tiny``), one process, one thread, each sample read
from disk, decoded, augmented and turned into tensors, ``--passes`` passes over the images:
- visionmtl: ``CocoDataset`` with the training transform (scale jitter, flip, colour jitter,
  resize of the long side to ``--size``), det+sem+inst targets: boxes, labels, instance masks and
  the semantic map; also without colour jitter, which the peer does not do;
- the peer: torchvision's detection-references pipeline, ``CocoDetection`` wrapped by
  ``wrap_dataset_for_transforms_v2`` (boxes, labels, masks) with ``transforms.v2``: flip, resize
  of the long side to ``--size``, float image; also without the float conversion (uint8 out,
  as ours since the device normalises). It makes no semantic map.
Both alternate pass by pass in one process, so machine noise hits both alike.
``--instances N ...``: the same photos with N synthetic objects each instead of their own (COCO-
train-like boxes, 22-point polygons, 1 % crowd RLE; :func:`benchmarks.data_scale.random_object`).

    python benchmarks/loader_throughput.py --sizes 512 800 --passes 3 [--instances 1 8 32 90]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.cli import emit_json  # noqa: E402
from benchmarks.data_scale import categories, random_object  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/coco_tiny"
ANN = DATA / "annotations/instances_train2017.json"
IMAGES = DATA / "images/train2017"


def with_instances(count: int, path: Path, seed: int = 0) -> Path:
    """coco_tiny's train photos with ``count`` synthetic objects each, written to ``path``."""
    data = json.loads(ANN.read_text())
    rng = np.random.default_rng(seed)
    annotations = [
        random_object(
            rng, len(data["images"]) * k + i + 1, image["id"], image["width"], image["height"]
        )
        for i, image in enumerate(data["images"])
        for k in range(count)
    ]
    path.write_text(json.dumps({**data, "annotations": annotations, "categories": categories()}))
    return path


def ours(size: int, color_jitter: float = 0.2, ann: Path = ANN):  # noqa: ANN201
    from visionmtl.data import CocoDataset, build_transforms

    # compact: uint8 image and semantic map, as the training loader delivers them (normalised
    # later on the device by DeviceInput)
    transform = build_transforms(size, train=True, color_jitter=color_jitter, compact=True)
    return CocoDataset(ann, IMAGES, transform, tasks=["det", "sem", "inst"])


def peer(size: int, uint8: bool = False, ann: Path = ANN):  # noqa: ANN201
    """torchvision's reference pipeline; ``uint8``: without its float conversion (a peer that, like
    ours, leaves the image uint8 for the device)."""
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
    from torchvision.transforms import v2

    steps = [v2.ToImage(), v2.RandomHorizontalFlip(0.5), v2.Resize(size=None, max_size=size)]
    transform = v2.Compose(steps if uint8 else [*steps, v2.ToDtype(torch.float32, scale=True)])
    dataset = CocoDetection(str(IMAGES), str(ann), transforms=transform)
    return wrap_dataset_for_transforms_v2(dataset, target_keys=("boxes", "labels", "masks"))


def samples_per_second(dataset) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return len(dataset) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800])
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument(
        "--instances", type=int, nargs="+", help="synthetic objects per image (default: COCO's own)"
    )
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    if not ANN.is_file():
        raise SystemExit(f"{ANN} not found: this benchmark reads ../shared/data/coco_tiny")
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for count in args.instances or [None]:
            ann = ANN if count is None else with_instances(count, Path(work) / f"n{count}.json")
            for size in args.sizes:
                rows.append(measure(size, ann, args.passes) | {"instances_per_image": count})
    emit_json(rows, args.out)
    return 0


def measure(size: int, ann: Path, passes: int) -> dict:
    """Samples/s of each pipeline at long side ``size`` on ``ann`` (median of ``passes``)."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' COCO() prints
        pipelines = {
            "visionmtl": ours(size, ann=ann),
            "visionmtl_no_color_jitter": ours(size, color_jitter=0.0, ann=ann),  # peer has none
            "torchvision_v2": peer(size, ann=ann),
            "torchvision_v2_uint8": peer(size, uint8=True, ann=ann),
        }
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(passes + 1):  # the first pass warms the file cache: not counted
        for name, dataset in pipelines.items():
            rates[name].append(samples_per_second(dataset))
    row = {"size": size, "images": len(pipelines["visionmtl"])}
    row |= {
        f"{name}_samples_per_s": round(statistics.median(r[1:]), 2) for name, r in rates.items()
    }
    peer_rate = row["torchvision_v2_samples_per_s"]
    uint8_rate = row["torchvision_v2_uint8_samples_per_s"]
    for name in ("visionmtl", "visionmtl_no_color_jitter"):
        row[f"{name}_over_peer"] = round(row[f"{name}_samples_per_s"] / peer_rate, 3)
        row[f"{name}_over_uint8_peer"] = round(row[f"{name}_samples_per_s"] / uint8_rate, 3)
    return row


if __name__ == "__main__":
    sys.exit(main())
