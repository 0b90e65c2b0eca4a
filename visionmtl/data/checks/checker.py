"""The pass over parsed COCO data: :func:`check_coco` (a file) and :func:`check_coco_data`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionmtl.data.checks._values import (
    BOX_TOLERANCE,
    MAX_IMAGE_SIDE,
    image_file_issue,
    is_int,
    number_issue,
    plain_numbers,
    polygon_issue,
    rle_issue,
    show,
)
from visionmtl.data.checks.problems import CheckReport, Problem
from visionmtl.errors import DataError


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


class _Checker:
    """One pass over parsed COCO data, collecting :class:`Problem` s."""

    def __init__(self, data: Any, ann_file: Path, image_dir: Path, check_images: bool) -> None:
        self.data = data
        self.ann_file = ann_file
        self.image_dir = image_dir
        self.check_images = check_images
        self.problems: list[Problem] = []
        self.declared_images: set[int] = set()
        self.image_sizes: dict[int, tuple[int, int]] = {}  # usable images: id -> (h, w)
        self.image_names: dict[int, str] = {}
        self.category_ids: set[int] = set()

    def add(self, severity: str, code: str, message: str, hint: str, **where: Any) -> None:
        image_id = where.get("image_id")
        file_name = self.image_names.get(image_id) if image_id is not None else None
        self.problems.append(
            Problem(severity, code, message, file_name=file_name, fix_hint=hint, **where)
        )

    def run(self) -> CheckReport:
        data = self.data
        report = CheckReport(self.ann_file, self.problems)
        hint = 'a COCO file is an object with "images", "annotations" and "categories" lists'
        if not isinstance(data, dict):
            self.add(
                "error", "bad-structure", f"holds a {type(data).__name__}, not an object", hint
            )
            return report
        keys = ("images", "annotations", "categories")
        for key in keys:
            if not isinstance(data.get(key), list):
                self.add("error", "bad-structure", f'"{key}" is missing or not a list', hint)
        if report.fatal:
            return report
        report.num_images, report.num_annotations, report.num_categories = (
            len(data[key]) for key in keys
        )
        self.check_categories(data["categories"])
        self.check_images_list(data["images"])
        used = self.check_annotations(data["annotations"])
        for image_id in self.image_sizes.keys() - used:
            self.add(
                "info",
                "image-without-annotations",
                "has no annotations",
                "kept as background-only",
                entity="image",
                image_id=image_id,
            )
        return report

    def check_categories(self, categories: list[Any]) -> None:
        for index, category in enumerate(categories):
            if not isinstance(category, dict) or not is_int(category.get("id")):
                self.add(
                    "error",
                    "bad-category",
                    f"{show(category)} has no integer 'id'",
                    'declare categories as {"id": int, "name": str}',
                    entity="category",
                    index=index,
                )
            elif category["id"] in self.category_ids:
                self.add(
                    "error",
                    "duplicate-category-id",
                    f"id {category['id']} is declared twice",
                    "make category ids unique",
                    entity="category",
                    index=index,
                )
            else:
                self.category_ids.add(category["id"])
        if not self.category_ids:
            self.add(
                "error",
                "no-categories",
                '"categories" declares no usable category',
                'declare every category as {"id": int, "name": str}',
            )

    def check_images_list(self, images: list[Any]) -> None:
        seen_names: set[str] = set()
        for index, image in enumerate(images):
            image_id = self.check_image_id(index, image)
            if image_id is None:
                continue
            where = {"entity": "image", "index": index, "image_id": image_id}
            file_name = image.get("file_name")
            if isinstance(file_name, str) and file_name:
                self.image_names[image_id] = file_name
            issues = _image_entry_issues(image)
            for code, key, message in issues:
                self.add(
                    "error", code, message, "fix the image entry in the JSON", field=key, **where
                )
            if issues:
                continue
            height, width = int(image["height"]), int(image["width"])
            self.image_sizes[image_id] = (height, width)
            if file_name in seen_names:
                self.add(
                    "warning",
                    "duplicate-file-name",
                    f"file {file_name} is listed twice",
                    "list each file once",
                    **where,
                )
            seen_names.add(file_name)
            found = (
                image_file_issue(self.image_dir / file_name, width, height)
                if self.check_images
                else None
            )
            if found:
                self.add(found[0], found[1], found[2], found[3], **where)

    def check_image_id(self, index: int, image: Any) -> int | None:
        """The id of image entry ``index`` if it is an object with a new 64-bit integer id; else
        None, with the problem added."""
        if not isinstance(image, dict):
            self.add(
                "error",
                "bad-image",
                f"entry {show(image)} is not an object",
                'each image is {"id", "file_name", "height", "width"}',
                entity="image",
                index=index,
            )
            return None
        image_id = image.get("id")
        if not is_int(image_id):
            code = "missing-key" if "id" not in image else "bad-type"
            self.add(
                "error",
                code,
                f"id {show(image_id)} is not a 64-bit integer",
                "give every image an integer id",
                field="id",
                entity="image",
                index=index,
            )
            return None
        if image_id in self.declared_images:
            self.add(
                "error",
                "duplicate-image-id",
                f"id {image_id} is used twice",
                "make image ids unique",
                entity="image",
                index=index,
                image_id=image_id,
            )
            return None
        self.declared_images.add(image_id)
        return image_id

    def check_annotations(self, annotations: list[Any]) -> set[int]:
        """Check every annotation; returns the ids of the images they refer to."""
        seen_ids: set[int] = set()
        used_images: set[int] = set()
        for index, annotation in enumerate(annotations):
            if not isinstance(annotation, dict):
                self.add(
                    "error",
                    "bad-annotation",
                    f"entry {show(annotation)} is not an object",
                    "each annotation is an object with id, image_id, category_id and bbox",
                    entity="annotation",
                    index=index,
                )
                continue
            annotation_id, image_id = annotation.get("id"), annotation.get("image_id")
            where = {
                "entity": "annotation",
                "index": index,
                "annotation_id": annotation_id if is_int(annotation_id) else None,
                "image_id": image_id if is_int(image_id) else None,
            }

            def add(
                severity: str,
                code: str,
                message: str,
                hint: str,
                field: str = "",
                where: dict[str, Any] = where,
            ) -> None:
                self.add(severity, code, message, hint, field=field, **where)

            self.check_annotation_keys(annotation, seen_ids, add)
            size = (
                self.image_sizes.get(where["image_id"]) if where["image_id"] is not None else None
            )
            if where["image_id"] in self.declared_images:
                used_images.add(where["image_id"])
            crowd = annotation.get("iscrowd", 0)
            if crowd not in (0, 1):
                add(
                    "error",
                    "bad-type",
                    f"iscrowd {show(crowd)} is not 0 or 1",
                    "set iscrowd to 0 or 1",
                    "iscrowd",
                )
            elif crowd:
                add("info", "crowd", "crowd region: not a detection target, ignored in sem_seg", "")
            self.check_bbox(annotation, size, add)
            self.check_segmentation(annotation.get("segmentation"), size, add)
        return used_images

    def check_annotation_keys(
        self, annotation: dict[str, Any], seen_ids: set[int], add: Any
    ) -> None:
        """``id`` (new), ``image_id`` (listed) and ``category_id`` (declared): 64-bit integers."""
        for key, declared, listing in (
            ("id", None, ""),
            ("image_id", self.declared_images, '"images"'),
            ("category_id", self.category_ids, '"categories"'),
        ):
            value = annotation.get(key)
            if key not in annotation:
                add(
                    "error",
                    "missing-key",
                    f"has no {key!r}",
                    f"give the annotation an integer {key}",
                    key,
                )
            elif not is_int(value):
                add(
                    "error",
                    "bad-type",
                    f"{key} {show(value)} is not a 64-bit integer",
                    f"make {key} an integer",
                    key,
                )
            elif declared is not None and value not in declared:
                code = "unknown-image" if key == "image_id" else "unknown-category"
                verb = "listed in" if key == "image_id" else "declared in"
                add(
                    "error",
                    code,
                    f"{key} {value} is not {verb} {listing}",
                    f"add it to {listing} or remove the annotation",
                    key,
                )
            elif key == "id" and value in seen_ids:
                add(
                    "error",
                    "duplicate-annotation-id",
                    f"id {value} is used twice",
                    "make annotation ids unique",
                    key,
                )
            elif key == "id":
                seen_ids.add(value)

    @staticmethod
    def check_bbox(annotation: dict[str, Any], size: tuple[int, int] | None, add: Any) -> None:
        hint = (
            "bbox is [x, y, width, height] in pixels (on_invalid=fix recomputes it from the mask)"
        )
        if "bbox" not in annotation:
            add("error", "missing-key", "has no 'bbox'", hint, "bbox")
            return
        bbox = annotation["bbox"]
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            add("error", "bad-type", f"bbox {show(bbox)} is not [x, y, w, h]", hint, "bbox")
            return
        if not plain_numbers(bbox):  # the slow path only to name the bad value
            for value in bbox:
                issue = number_issue(value)
                if issue:
                    add("error", issue[0], f"bbox {show(bbox)}: {issue[1]}", hint, "bbox")
                    return
        x, y, width, height = (float(value) for value in bbox)
        if width < 0 or height < 0:
            add(
                "error",
                "negative-bbox",
                f"bbox {show(bbox)} has a negative width or height",
                "is it [x0, y0, x1, y1]? COCO wants [x, y, width, height]",
                "bbox",
            )
        elif width == 0 or height == 0:
            add(
                "warning",
                "empty-bbox",
                f"bbox {show(bbox)} has zero width or height; not a detection target",
                "remove it or let on_invalid=fix recompute it from the mask",
                "bbox",
            )
        elif size is not None and (
            min(x, y) < -BOX_TOLERANCE
            or x + width > size[1] + BOX_TOLERANCE
            or y + height > size[0] + BOX_TOLERANCE
        ):
            add(
                "error",
                "bbox-outside-image",
                f"bbox {show(bbox)} reaches outside the {size[1]}x{size[0]} image",
                "clip it to the image (on_invalid=fix does)",
                "bbox",
            )

    @staticmethod
    def check_segmentation(segmentation: Any, size: tuple[int, int] | None, add: Any) -> None:
        hint = "use polygons [[x1, y1, x2, y2, ...]] or RLE with the image's [height, width]"
        if segmentation is None:
            return
        if isinstance(segmentation, list):
            if not segmentation:
                add(
                    "warning",
                    "empty-segmentation",
                    "segmentation is []: the image's masks count as unlabelled",
                    "remove the key or give the polygons",
                    "segmentation",
                )
            for part_index, part in enumerate(segmentation):
                issue = polygon_issue(part, size)
                if issue:
                    add("error", issue[0], f"polygon {part_index} {issue[1]}", hint, "segmentation")
        elif isinstance(segmentation, dict):
            issue = rle_issue(segmentation, size)
            if issue:
                add("error", issue[0], issue[1], hint, "segmentation")
        else:
            add(
                "error",
                "bad-type",
                f"segmentation {show(segmentation)} is neither polygons nor RLE",
                hint,
                "segmentation",
            )


def _image_entry_issues(image: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(code, key, message)`` for each unusable ``file_name``, ``height`` or ``width`` of an
    image entry."""
    file_name = image.get("file_name")
    issues = (
        []
        if isinstance(file_name, str) and file_name
        else [
            (
                "missing-key" if "file_name" not in image else "bad-type",
                "file_name",
                f"file_name {show(file_name)} is not a file name",
            )
        ]
    )
    for key in ("height", "width"):
        value = image.get(key)
        issue = ("missing-key", f"has no {key}") if key not in image else number_issue(value)
        if issue is None and (value != int(value) or value <= 0):
            issue = ("bad-image-size", f"{key} {value} is not a positive integer")
        elif issue is None and value > MAX_IMAGE_SIDE:
            issue = ("huge-value", f"{key} {value} is larger than {MAX_IMAGE_SIDE}")
        if issue:
            issues.append((issue[0], key, issue[1] if key in issue[1] else f"{key} {issue[1]}"))
    return issues
