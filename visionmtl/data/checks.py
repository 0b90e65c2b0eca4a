"""Find bad COCO data before training: every problem named with its annotation, image file and a fix.

``check_coco`` never raises on malformed content (only :class:`DataError` when the JSON file is
missing or not JSON); it returns a :class:`CheckReport`. ``clean_annotations`` applies an
``on_invalid`` policy ("error" | "skip" | "fix") to the data given its report
(:mod:`visionmtl.data.cleaning`). :class:`Problem` and :class:`CheckReport` live in
:mod:`visionmtl.data.problems`, the checks of single values in ``_coco_values``; all are
re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionmtl.data._coco_checker import _Checker
from visionmtl.data._coco_values import (
    BOX_TOLERANCE,
    MAX_IMAGE_SIDE,
    MAX_VALUE,
    image_file_issue,
    is_int,
    number_issue,
    polygon_issue,
    rle_issue,
    rle_string_counts,
    show,
)
from visionmtl.data.cleaning import POLICIES, clean_annotations
from visionmtl.data.errors import DataError
from visionmtl.data.problems import FATAL_CODES, CheckReport, Problem

__all__ = [
    "BOX_TOLERANCE",
    "FATAL_CODES",
    "MAX_IMAGE_SIDE",
    "MAX_VALUE",
    "POLICIES",
    "CheckReport",
    "Problem",
    "check_coco",
    "check_coco_data",
    "clean_annotations",
    "image_file_issue",
    "is_int",
    "number_issue",
    "polygon_issue",
    "read_coco_json",
    "rle_issue",
    "rle_string_counts",
    "show",
]


def read_coco_json(ann_file: str | Path) -> Any:
    """The parsed JSON of ``ann_file``; DataError when it is missing or not JSON."""
    try:
        with open(ann_file, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{ann_file}: annotation file not found; check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise DataError(
            f"{ann_file}: cannot be read as JSON ({error}); check that it is a COCO annotation file"
        ) from None


def check_coco(
    ann_file: str | Path, image_dir: str | Path, check_images: bool = True
) -> CheckReport:
    """Check a COCO annotation file (and, with ``check_images``, every image file it names)."""
    if check_images and not Path(image_dir).is_dir():
        raise DataError(f"{image_dir}: image folder not found; check the path")
    data = read_coco_json(ann_file)
    return check_coco_data(data, ann_file, image_dir, check_images)


def check_coco_data(
    data: Any, ann_file: str | Path, image_dir: str | Path = ".", check_images: bool = False
) -> CheckReport:
    """Check already-parsed COCO ``data`` (from ``ann_file``); never raises on bad content."""
    return _Checker(data, Path(ann_file), Path(image_dir), check_images).run()
