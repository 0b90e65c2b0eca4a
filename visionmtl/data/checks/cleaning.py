"""Apply an ``on_invalid`` policy ("error" | "skip" | "fix") to COCO data given its check report."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pycocotools import mask as mask_utils

from visionmtl.config import ON_INVALID
from visionmtl.data.checks._values import is_int, number_issue, polygon_issue
from visionmtl.data.checks.problems import CheckReport, Problem
from visionmtl.errors import DataError


def clean_annotations(
    data: dict[str, Any], report: CheckReport, policy: str
) -> tuple[dict[str, Any], list[Problem]]:
    """Apply ``policy`` to ``data`` given its ``report``; returns the cleaned data and the report's
    problems, each with ``action`` saying what was done.

    "error" raises DataError listing the first errors (warnings and info pass); "skip" drops
    offending categories, images (all their annotations with them) and annotations; "fix" also
    drops those but first repairs annotations where it can: boxes clipped to the image, degenerate
    or malformed boxes recomputed from the segmentation, invalid polygon parts dropped, polygons
    clipped, duplicate annotation ids renumbered. Problems in ``FATAL_CODES`` always raise.
    """
    if policy not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {policy!r}")
    if report.fatal:
        raise DataError(_error_listing(report, report.fatal))
    if policy == "error":
        if report.errors:
            raise DataError(
                _error_listing(report, report.errors)
                + f". List them all with `visionmtl check {report.ann_file} IMAGE_DIR`, "
                "or set data.on_invalid to skip or fix"
            )
        return data, [_acted(problem, "kept") for problem in report.problems]
    located: dict[tuple[str, int | None], list[Problem]] = {}
    for problem in report.problems:
        located.setdefault((problem.entity, problem.index), []).append(problem)
    handled = [_acted(problem, "kept") for problem in located.get(("dataset", None), [])]
    categories, images, kept_sizes = _keep_categories_and_images(data, located, handled)
    annotations = _keep_annotations(data["annotations"], located, kept_sizes, policy, handled)
    cleaned = dict(data, images=images, annotations=annotations, categories=categories)
    return cleaned, handled


def _keep_categories_and_images(
    data: dict[str, Any],
    located: dict[tuple[str, int | None], list[Problem]],
    handled: list[Problem],
) -> tuple[list[Any], list[Any], dict[int, tuple[int, int]]]:
    """The categories and images without blocking problems, and the kept images' (h, w) by id;
    appends each of their problems, with its action, to ``handled``."""
    categories = []
    for index, category in enumerate(data["categories"]):
        problems = located.get(("category", index), [])
        handled += [
            _acted(p, "dropped category" if _blocking(problems) else "kept") for p in problems
        ]
        if not _blocking(problems):
            categories.append(category)
    per_image = Counter(_get(a, "image_id") for a in data["annotations"])
    images, kept_sizes = [], {}
    for index, image in enumerate(data["images"]):
        problems = located.get(("image", index), [])
        blocked = _blocking(problems)
        action = (
            f"dropped image and its {per_image[_get(image, 'id')]} annotation(s)"
            if blocked
            else "kept"
        )
        handled += [_acted(problem, action) for problem in problems]
        if not blocked:
            images.append(image)
            kept_sizes[image["id"]] = (int(image["height"]), int(image["width"]))
    return categories, images, kept_sizes


def _keep_annotations(
    annotations: list[Any],
    located: dict[tuple[str, int | None], list[Problem]],
    kept_sizes: dict[int, tuple[int, int]],
    policy: str,
    handled: list[Problem],
) -> list[dict[str, Any]]:
    """The annotations of kept images without blocking problems (with "fix": repaired where
    possible); appends each of their problems, with its action, to ``handled``."""
    kept_annotations = []
    next_id = 1 + max(
        (a["id"] for a in annotations if isinstance(a, dict) and is_int(a.get("id"))),
        default=0,
    )
    for index, annotation in enumerate(annotations):
        problems = located.get(("annotation", index), [])
        kept: dict[str, Any] | None = annotation
        action = "kept"
        if _blocking(problems):
            kept, action = None, "dropped annotation"
            if policy == "fix" and isinstance(annotation, dict):
                size = kept_sizes.get(_get(annotation, "image_id"))
                kept, action = _fix_annotation(annotation, _blocking(problems), size, next_id)
                next_id += 1
        elif annotation.get("image_id") not in kept_sizes:
            kept = None  # its image was dropped (the image's problem says so)
        handled += [_acted(problem, action) for problem in problems]
        if kept is not None:
            kept_annotations.append(kept)
    return kept_annotations


def _get(entry: Any, key: str) -> Any:
    """``entry[key]`` for a dict entry with a hashable int value, else None."""
    value = entry.get(key) if isinstance(entry, dict) else None
    return value if is_int(value) else None


def _acted(problem: Problem, action: str) -> Problem:
    return Problem(**{**problem.to_dict(), "action": action})


def _blocking(problems: list[Problem]) -> list[Problem]:
    """Problems that keep an entry out of a skip/fix data set (errors and zero-size boxes)."""
    return [p for p in problems if p.severity == "error" or p.code == "empty-bbox"]


def _error_listing(report: CheckReport, problems: list[Problem], limit: int = 5) -> str:
    shown = "; ".join(f"{p} ({p.fix_hint})" if p.fix_hint else str(p) for p in problems[:limit])
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{report.ann_file}: {len(problems)} error(s): {shown}{more}"


def _fix_annotation(
    annotation: dict[str, Any], problems: list[Problem], size: tuple[int, int] | None, new_id: int
) -> tuple[dict[str, Any] | None, str]:
    """Repair one annotation (see :func:`clean_annotations`) or return None when it cannot be."""
    segmentation = annotation.get("segmentation")
    polygons = isinstance(segmentation, list)
    repairable = size is not None and all(
        p.code == "duplicate-annotation-id"
        or p.field == "bbox"
        or (p.field == "segmentation" and polygons)
        for p in problems
    )
    if not repairable:
        return None, "dropped annotation"
    fixed, notes = dict(annotation), []
    if any(p.code == "duplicate-annotation-id" for p in problems):
        fixed["id"] = new_id
        notes.append(f"new id {new_id}")
    if any(p.field == "segmentation" for p in problems):
        repairable_codes = (None, "polygon-outside-image")
        parts = [
            _clip_polygon(part, size)
            for part in segmentation
            if (polygon_issue(part, size) or (None,))[0] in repairable_codes
        ]
        if not parts:
            return None, "dropped annotation: no valid polygon left"
        fixed["segmentation"] = parts
        notes.append(f"kept {len(parts)} of {len(segmentation)} polygon(s), clipped to the image")
    if any(p.field == "bbox" for p in problems):
        box = _clip_box(annotation.get("bbox"), size)
        notes.append("bbox clipped to the image")
        if box is None:
            box = _box_from_segmentation(fixed.get("segmentation"), size)
            notes[-1] = "bbox recomputed from the segmentation"
        if box is None:
            return None, "dropped annotation: no usable box or mask"
        fixed["bbox"] = box
    return fixed, "fixed: " + "; ".join(notes)


def _clip_polygon(part: list[float], size: tuple[int, int]) -> list[float]:
    height, width = size
    return [
        min(max(float(v), 0.0), float(width if i % 2 == 0 else height)) for i, v in enumerate(part)
    ]


def _clip_box(bbox: Any, size: tuple[int, int]) -> list[float] | None:
    """``bbox`` clipped to the image, or None when it is malformed or (then) empty."""
    if not isinstance(bbox, list | tuple) or len(bbox) != 4 or any(number_issue(v) for v in bbox):
        return None
    x, y, width, height = (float(v) for v in bbox)
    if width <= 0 or height <= 0:
        return None
    x0, y0 = min(max(x, 0.0), size[1]), min(max(y, 0.0), size[0])
    x1, y1 = min(max(x + width, 0.0), size[1]), min(max(y + height, 0.0), size[0])
    return [x0, y0, x1 - x0, y1 - y0] if x1 > x0 and y1 > y0 else None


def _box_from_segmentation(segmentation: Any, size: tuple[int, int]) -> list[float] | None:
    """The [x, y, w, h] box around a valid segmentation (polygons or RLE), None if it is empty."""
    if isinstance(segmentation, list) and segmentation:
        xs = [v for part in segmentation for v in part[0::2]]
        ys = [v for part in segmentation for v in part[1::2]]
        box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    elif isinstance(segmentation, dict):
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segmentation, *size)
        else:
            rle = {
                "size": segmentation["size"],
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
        box = [float(v) for v in mask_utils.toBbox(rle)]
    else:
        return None
    return box if box[2] > 0 and box[3] > 0 else None
