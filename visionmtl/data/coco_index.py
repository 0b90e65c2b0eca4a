"""A COCO annotation file read, checked, cleaned and packed once: what :class:`CocoDataset` holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionmtl.data.checks import (
    CheckReport,
    Problem,
    check_coco_data,
    clean_annotations,
    read_coco_json,
)
from visionmtl.data.records import PackedRecords


@dataclass
class CocoIndex:
    """The cleaned data of one annotation file, compact (a few Python objects at any size).

    ``images[i]`` is the image dict of the ``i``-th image in file order and ``annotations[i]`` the
    list of its annotation dicts (two stores: reading an image's size unpickles no polygons);
    ``image_ids`` [N] int64 their JSON ids; ``categories`` sorted by
    id; ``extras`` the file's other top-level keys (``info``, ``licenses``...); ``report`` the check
    report and ``problems`` its problems with the action the ``on_invalid`` policy took."""

    images: PackedRecords
    annotations: PackedRecords
    image_ids: np.ndarray
    categories: list[dict[str, Any]]
    extras: dict[str, Any]
    report: CheckReport
    problems: list[Problem]
    num_scored: int

    def coco_data(self, keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The cleaned COCO dict (a new copy), with the annotations for which ``keep`` is true."""
        annotations = [a for group in self.annotations for a in group if keep(a)]
        images = list(self.images)
        categories = [dict(category) for category in self.categories]
        return {
            **self.extras,
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }


def build_index(
    ann_file: Path, image_dir: Path, on_invalid: str, keep: Callable[[dict[str, Any]], bool]
) -> CocoIndex:
    """Read ``ann_file``, check it (JSON only), apply ``on_invalid`` and pack the result;
    ``num_scored`` counts the annotations for which ``keep`` is true."""
    data = read_coco_json(ann_file)
    report = check_coco_data(data, ann_file, image_dir)
    data, problems = clean_annotations(data, report, on_invalid)
    by_image: dict[int, list[dict[str, Any]]] = {int(image["id"]): [] for image in data["images"]}
    for annotation in data["annotations"]:
        by_image[int(annotation["image_id"])].append(annotation)
    main_keys = ("images", "annotations", "categories")
    return CocoIndex(
        images=PackedRecords(data["images"]),
        annotations=PackedRecords(by_image.values()),
        image_ids=np.fromiter(by_image, dtype=np.int64, count=len(by_image)),
        categories=sorted(data["categories"], key=lambda category: category["id"]),
        extras={key: value for key, value in data.items() if key not in main_keys},
        report=report,
        problems=problems,
        num_scored=sum(map(keep, data["annotations"])),
    )
