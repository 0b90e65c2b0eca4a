"""Check a semantic PNG label set before training: every image has a readable class map of its
size whose ids the set declares (:func:`check_png_set` returns a :class:`CheckReport`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from visionmtl.data.checks._values import image_file_issue
from visionmtl.data.checks.problems import CheckReport, Problem
from visionmtl.data.semantic_png import png_pairs, read_class_ids
from visionmtl.errors import DataError


def check_png_set(
    image_dir: str | Path,
    mask_dir: str | Path,
    declared: Mapping[int, str | None] | None = None,
) -> CheckReport:
    """Check every image of ``image_dir`` against ``mask_dir / (stem + ".png")``.

    ``declared`` is the set's PNG id -> class name (None: ignored), see ``declared_png_ids``;
    without it ids are only counted. Errors: ``missing-mask``, ``unreadable-mask``,
    ``unreadable-image``, ``size-mismatch``, ``undeclared-id`` (with its pixel count); info
    ``ids-found`` (pixels per id over the set). DataError only when a folder is missing."""
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    for folder, what in ((image_dir, "image"), (mask_dir, "semantic mask")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {what} folder not found; check the path")
    images, masks = png_pairs(image_dir, mask_dir)
    report = CheckReport(mask_dir, num_images=len(images), num_annotations=len(masks))
    report.num_categories = len({n for n in (declared or {}).values() if n is not None})
    pixels = np.zeros(256, np.int64)
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        found = _check_pair(image, mask, index, declared, report.problems)
        if found is not None:
            pixels += found
    used = np.flatnonzero(pixels)
    total = max(int(pixels.sum()), 1)
    summary = ", ".join(f"{i}: {100 * pixels[i] / total:.2f}%" for i in used)
    report.problems.append(Problem("info", "ids-found", f"pixels per class id: {summary}"))
    return report


def _check_pair(
    image: Path,
    mask: Path,
    index: int,
    declared: Mapping[int, str | None] | None,
    problems: list[Problem],
) -> np.ndarray | None:
    """Problems of one image and its mask; the mask's pixel count per id [256], when readable."""

    def add(code: str, message: str, hint: str, severity: str = "error") -> None:
        problems.append(
            Problem(
                severity,
                code,
                message,
                file_name=image.name,
                fix_hint=hint,
                entity="image",
                index=index,
            )
        )

    if not mask.is_file():
        add("missing-mask", f"{mask} not found", "every image needs a PNG with the same stem")
        return None
    try:
        ids = read_class_ids(mask)
    except DataError as error:
        add("unreadable-mask", str(error), "save it as an 8-bit single-channel (L or P) PNG")
        return None
    counts = np.bincount(ids.reshape(-1).astype(np.int64), minlength=256)
    height, width = ids.shape
    issue = image_file_issue(image, width, height, expected_from=f"its class map {mask.name}")
    if issue is not None:
        severity, code, message, hint = issue
        add(code, message, hint, severity)
    if declared is not None:
        undeclared = [int(i) for i in np.flatnonzero(counts) if i not in declared]
        if undeclared:
            listed = ", ".join(f"id {i} ({counts[i]} pixels)" for i in undeclared)
            add(
                "undeclared-id",
                f"{mask.name}: class ids the id map does not declare: {listed}",
                "declare them in ids / ignore_ids, or fix the mask",
            )
    return counts
