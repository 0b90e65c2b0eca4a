"""Find bad COCO data before training: every problem named with its annotation, image file and a fix.

``check_coco`` never raises on malformed content (only :class:`DataError` when the JSON file is
missing or not JSON); it returns a :class:`CheckReport`. ``clean_annotations`` applies an
``on_invalid`` policy ("error" | "skip" | "fix") to the data given its report.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pycocotools import mask as mask_utils

from visionmtl.data.errors import DataError

MAX_VALUE: float = 1e7  # larger coordinates or sizes are data bugs (and would blow up decoding)
MAX_IMAGE_SIDE: int = 100_000
BOX_TOLERANCE: float = 1.0  # pixels a box or polygon may stick out of the image
# The whole file is unusable with these, whatever the policy.
FATAL_CODES: frozenset[str] = frozenset({"bad-structure", "no-categories"})
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Problem:
    """One finding. ``entity`` ("dataset"|"category"|"image"|"annotation") and ``index`` (position
    in that JSON list) locate it even when ids are missing or duplicated; ``action`` says what a
    policy did about it ("" before cleaning)."""

    severity: str  # "error" | "warning" | "info"
    code: str
    message: str
    annotation_id: int | None = None
    image_id: int | None = None
    file_name: str | None = None
    fix_hint: str = ""
    field: str = ""
    entity: str = "dataset"
    index: int | None = None
    action: str = ""

    @property
    def where(self) -> str:
        """``annotation 7 (image 10, a.png)``, ``image 10 (a.png)``, ``category 3`` or ``top level``."""
        image = " ".join(
            str(part) for part in (self.image_id, self.file_name and f"({self.file_name})") if part
        )
        if self.entity == "annotation":
            name = self.annotation_id if self.annotation_id is not None else f"#{self.index}"
            return f"annotation {name}" + (f" (image {image})" if image else "")
        if self.entity == "image":
            return f"image {image or f'#{self.index}'}"
        if self.entity == "category":
            return f"category #{self.index}"
        return "top level"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return asdict(self)


@dataclass
class CheckReport:
    """All problems found in one annotation file, with counts and text/JSON renderings."""

    ann_file: Path
    problems: list[Problem] = field(default_factory=list)
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Number of problems per code, most frequent first."""
        return dict(Counter(problem.code for problem in self.problems).most_common())

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "warning"]

    @property
    def fatal(self) -> list[Problem]:
        """Problems that make the whole file unusable (no policy can repair them)."""
        return [problem for problem in self.problems if problem.code in FATAL_CODES]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings and info are allowed)."""
        return not self.errors

    def summary(self) -> str:
        """One line: ``ann.json: 2 errors, 1 warning, 3 info in 5 images, 9 annotations (codes)``."""
        severities = Counter(problem.severity for problem in self.problems)
        codes = ", ".join(f"{code} {count}" for code, count in self.counts.items())
        return (
            f"{self.ann_file}: {severities['error']} error(s), {severities['warning']} warning(s), "
            f"{severities['info']} info in {self.num_images} images, {self.num_annotations} "
            f"annotations, {self.num_categories} categories" + (f" ({codes})" if codes else "")
        )

    def to_text(self) -> str:
        """Every problem, grouped by code (errors first), each with its fix hint; then the summary."""
        rank = {"error": 0, "warning": 1, "info": 2}
        by_code: dict[str, list[Problem]] = {}
        for problem in sorted(self.problems, key=lambda p: rank.get(p.severity, 3)):
            by_code.setdefault(problem.code, []).append(problem)
        lines = []
        for code, problems in by_code.items():
            lines.append(f"[{problems[0].severity}] {code} ({len(problems)})")
            for problem in problems:
                hint = f"  -> {problem.fix_hint}" if problem.fix_hint else ""
                action = f"  [{problem.action}]" if problem.action else ""
                lines.append(f"  {problem}{hint}{action}")
        return "\n".join([*lines, self.summary()])

    def to_json(self) -> str:
        """The report as a JSON document (``summary``, ``counts`` and ``problems``)."""
        document = {
            "ann_file": str(self.ann_file),
            "ok": self.ok,
            "summary": self.summary(),
            "counts": self.counts,
            "problems": [problem.to_dict() for problem in self.problems],
        }
        return json.dumps(document, indent=2, allow_nan=False)


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


def show(value: Any, limit: int = 40) -> str:
    """A short ``repr`` of a user value for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(value: Any) -> bool:
    """A JSON integer (not a bool) that fits in int64, as ids must (they become tensors)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def number_issue(value: Any) -> tuple[str, str] | None:
    """``(code, message)`` when ``value`` is not a usable number (wrong type, NaN/inf, huge)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "bad-type", f"{show(value)} is not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return "non-finite", f"{value} is not a finite number"
    if abs(value) > MAX_VALUE:
        return "huge-value", f"{show(value)} is larger than {MAX_VALUE:g}"
    return None


def image_file_issue(path: Path, width: int, height: int) -> tuple[str, str, str, str] | None:
    """``(severity, code, message, fix_hint)`` when the file at ``path`` is missing, broken,
    truncated or not ``width`` x ``height`` (after EXIF rotation)."""
    if not path.is_file():
        return "error", "missing-file", f"file {path} not found", "check image_dir and file_name"
    try:
        with Image.open(path) as opened:
            opened.verify()
    except Exception as error:  # PIL raises many types on garbage; any of them means broken
        return (
            "error",
            "unreadable-image",
            f"file {path} is not a readable image ({type(error).__name__}: {error})",
            "replace the file or remove the image and its annotations",
        )
    try:
        with Image.open(path) as opened:
            opened.load()
            stored = opened.size
            orientation = opened.getexif().get(0x0112, 1)
    except Exception as error:  # a truncated file passes verify() but fails to decode
        return (
            "error",
            "truncated-image",
            f"file {path} cannot be fully decoded ({type(error).__name__}: {error})",
            "the file is truncated or corrupt: replace it or remove the image",
        )
    rotated = stored[::-1] if orientation in _ROTATING_ORIENTATIONS else stored
    if rotated == (width, height):
        return None
    if stored == (width, height):
        return (
            "warning",
            "exif-size-swapped",
            f"file is {rotated[0]}x{rotated[1]} (w x h) after EXIF rotation (orientation "
            f"{orientation}); only the un-rotated size {stored[0]}x{stored[1]} matches the JSON",
            "the annotations were probably drawn on the un-rotated pixels, which visionmtl then "
            "uses; to use the rotated view swap width/height and rotate the annotations, or strip "
            "the EXIF orientation tag",
        )
    return (
        "error",
        "size-mismatch",
        f"file is {rotated[0]}x{rotated[1]} (w x h) but the JSON says {width}x{height}",
        "fix width/height in the JSON (the annotations may be for another resolution) or the file",
    )


def rle_string_counts(text: str) -> list[int] | None:
    """Run lengths of a COCO compressed RLE string, or None if it is malformed.

    Mirrors pycocotools' ``rleFrString``, which reads past the end of malformed strings.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text) or shift > 60:
                return None
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def polygon_issue(part: Any, size: tuple[int, int] | None) -> tuple[str, str] | None:
    """``(code, message)`` when one polygon of a segmentation is unusable; ``size`` is (h, w)."""
    if not isinstance(part, list | tuple):
        return "bad-polygon", f"{show(part)} is not a list of x, y coordinates"
    if len(part) % 2:
        return "bad-polygon", f"has an odd number ({len(part)}) of coordinates"
    if len(part) < 6:
        return "bad-polygon", f"has {len(part) // 2} point(s); a polygon needs at least 3"
    for value in part:
        issue = number_issue(value)
        if issue:
            return "bad-polygon", f"coordinate {issue[1]}"
    if size is not None:
        height, width = size
        xs, ys = part[0::2], part[1::2]
        if (
            min(xs) < -BOX_TOLERANCE
            or min(ys) < -BOX_TOLERANCE
            or max(xs) > width + BOX_TOLERANCE
            or max(ys) > height + BOX_TOLERANCE
        ):
            return "polygon-outside-image", f"reaches outside the {width}x{height} image"
    return None


def rle_issue(rle: dict[str, Any], size: tuple[int, int] | None) -> tuple[str, str] | None:
    """``(code, message)`` when an RLE dict is malformed or not of the image's (h, w) ``size``."""
    rle_size, counts = rle.get("size"), rle.get("counts")
    if not (
        isinstance(rle_size, list | tuple)
        and len(rle_size) == 2
        and all(is_int(v) and 0 <= v <= MAX_IMAGE_SIDE for v in rle_size)
    ):
        return "bad-rle", f"RLE size {show(rle_size)} is not [height, width]"
    if size is not None and list(rle_size) != list(size):
        return (
            "rle-size-mismatch",
            f"RLE size {list(rle_size)} (h, w) is not the image's {list(size)}",
        )
    if isinstance(counts, bytes):
        counts = counts.decode("latin-1")
    if isinstance(counts, str):
        runs = rle_string_counts(counts)
        if runs is None:
            return "bad-rle", "compressed 'counts' is not a valid COCO RLE string"
    elif isinstance(counts, list) and all(is_int(v) for v in counts):
        runs = counts
    else:
        return "bad-rle", f"'counts' {show(counts)} is neither an RLE string nor a list of integers"
    pixels = rle_size[0] * rle_size[1]
    if any(not 0 <= run < 2**32 for run in runs) or sum(runs) != pixels:
        return "bad-rle", f"run lengths do not add up to the {pixels} pixels of the mask"
    return None


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
            if not isinstance(image, dict):
                self.add(
                    "error",
                    "bad-image",
                    f"entry {show(image)} is not an object",
                    'each image is {"id", "file_name", "height", "width"}',
                    entity="image",
                    index=index,
                )
                continue
            image_id, file_name = image.get("id"), image.get("file_name")
            where = {
                "entity": "image",
                "index": index,
                "image_id": image_id if is_int(image_id) else None,
            }
            if not is_int(image_id):
                code = "missing-key" if "id" not in image else "bad-type"
                self.add(
                    "error",
                    code,
                    f"id {show(image_id)} is not a 64-bit integer",
                    "give every image an integer id",
                    field="id",
                    **where,
                )
                continue
            if image_id in self.declared_images:
                self.add(
                    "error",
                    "duplicate-image-id",
                    f"id {image_id} is used twice",
                    "make image ids unique",
                    **where,
                )
                continue
            self.declared_images.add(image_id)
            if isinstance(file_name, str) and file_name:
                self.image_names[image_id] = file_name
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
                issue = (
                    ("missing-key", f"has no {key}") if key not in image else number_issue(value)
                )
                if issue is None and (value != int(value) or value <= 0):
                    issue = ("bad-image-size", f"{key} {value} is not a positive integer")
                elif issue is None and value > MAX_IMAGE_SIDE:
                    issue = ("huge-value", f"{key} {value} is larger than {MAX_IMAGE_SIDE}")
                if issue:
                    issues.append(
                        (issue[0], key, issue[1] if key in issue[1] else f"{key} {issue[1]}")
                    )
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


POLICIES: tuple[str, ...] = ("error", "skip", "fix")


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
    if policy not in POLICIES:
        raise ValueError(f"on_invalid must be one of {POLICIES}, got {policy!r}")
    if report.fatal:
        raise DataError(_error_listing(report, report.fatal))
    if policy == "error":
        if report.errors:
            raise DataError(
                _error_listing(report, report.errors)
                + f". List them all with `python tools/check_data.py {report.ann_file} IMAGE_DIR`, "
                "or set data.on_invalid to skip or fix"
            )
        return data, [_acted(problem, "kept") for problem in report.problems]
    located: dict[tuple[str, int | None], list[Problem]] = {}
    for problem in report.problems:
        located.setdefault((problem.entity, problem.index), []).append(problem)
    handled = [_acted(problem, "kept") for problem in located.get(("dataset", None), [])]
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
    annotations = []
    next_id = 1 + max(
        (a["id"] for a in data["annotations"] if isinstance(a, dict) and is_int(a.get("id"))),
        default=0,
    )
    for index, annotation in enumerate(data["annotations"]):
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
            annotations.append(kept)
    cleaned = dict(data, images=images, annotations=annotations, categories=categories)
    return cleaned, handled


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
