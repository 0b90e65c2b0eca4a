"""Checks of single COCO values (numbers, image files, polygons, RLE) shared by the checker and
the cleaner; each returns the problem found, or None."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MAX_VALUE: float = 1e7  # larger coordinates or sizes are data bugs (and would blow up decoding)
MAX_IMAGE_SIDE: int = 100_000
BOX_TOLERANCE: float = 1.0  # pixels a box or polygon may stick out of the image
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


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


def image_file_issue(
    path: Path, width: int, height: int, expected_from: str = "the JSON"
) -> tuple[str, str, str, str] | None:
    """``(severity, code, message, fix_hint)`` when the file at ``path`` is missing, broken,
    truncated or not ``width`` x ``height`` (after EXIF rotation), the size ``expected_from``
    says (the JSON, or a class-map PNG)."""
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
            f"{orientation}); only the un-rotated size {stored[0]}x{stored[1]} matches "
            f"{expected_from}",
            "the annotations were probably drawn on the un-rotated pixels, which visionmtl then "
            "uses; to use the rotated view swap width/height and rotate the annotations, or strip "
            "the EXIF orientation tag",
        )
    return (
        "error",
        "size-mismatch",
        f"file is {rotated[0]}x{rotated[1]} (w x h) but {expected_from} says {width}x{height}",
        f"fix the size in {expected_from} (it may be for another resolution) or the file",
    )


# Characters of one run in a COCO RLE string that numpy decodes: 7 x 5 bits (with the sign) stay
# far inside int64; longer runs (never needed for a mask under 2**34 pixels) take the Python path.
_FAST_RUN_CHARS = 7


def rle_string_runs(text: str) -> np.ndarray | list[int] | None:
    """:func:`rle_string_counts`, vectorised: int64 run lengths (a list from the reference parser
    when a run is longer than numpy's fast path takes), or None if malformed. A COCO-sized file
    has thousands of crowd RLE strings of thousands of characters each."""
    if not text.isascii():  # every valid character is ASCII (48..111)
        return None
    codes = np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, np.int64)
    if codes.min() < 0 or codes.max() >= 64 or codes[-1] & 0x20:
        return None  # a character outside the alphabet, or a last run that goes on
    ends = np.flatnonzero((codes & 0x20) == 0)  # the last character of each run
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _FAST_RUN_CHARS:
        return rle_string_counts(text)
    position = np.arange(codes.size) - np.repeat(starts, lengths)
    values = np.bitwise_or.reduceat((codes & 0x1F) << (5 * position), starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] |= np.left_shift(-1, 5 * lengths[negative])
    # runs from the fourth on are stored as differences to the run two before
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])
    counts[2::2] = np.cumsum(values[2::2])
    return counts


def rle_string_counts(text: str) -> list[int] | None:
    """Run lengths of a COCO compressed RLE string, or None if it is malformed (the reference
    for :func:`rle_string_runs`, which the checks use).

    The same decoding as pycocotools' ``rleFrString`` (``common/maskApi.c``), kept here because
    pycocotools has no validating parser and its C code trusts the string: ``rleFrString`` reads
    past the end of a string whose last character has the continuation bit (and accepts any
    character), and ``rleDecode`` writes ``sum(counts)`` bytes into the ``h * w`` mask, out of
    bounds when the runs add up to more. So a malformed string must be caught before it reaches
    ``pycocotools.mask`` (see :func:`rle_issue`), which only this Python copy can do safely.
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


_NUMBER_TYPES = frozenset((int, float))  # exactly: bool (an int subclass) is not a coordinate


def plain_numbers(values: list | tuple) -> bool:
    """True when every value is an int or float, finite and within MAX_VALUE: what
    :func:`number_issue` accepts, checked by C-level iteration (a COCO-sized file has millions of
    polygon coordinates; one Python call per value was most of the checked start-up)."""
    if not _NUMBER_TYPES.issuperset(map(type, values)):
        return False
    total = sum(values)  # NaN or inf anywhere make it NaN or inf (or a finite overflow: inf)
    if total != total or total in (math.inf, -math.inf):
        return False
    return max(map(abs, values)) <= MAX_VALUE


def polygon_issue(part: Any, size: tuple[int, int] | None) -> tuple[str, str] | None:
    """``(code, message)`` when one polygon of a segmentation is unusable; ``size`` is (h, w)."""
    if not isinstance(part, list | tuple):
        return "bad-polygon", f"{show(part)} is not a list of x, y coordinates"
    if len(part) % 2:
        return "bad-polygon", f"has an odd number ({len(part)}) of coordinates"
    if len(part) < 6:
        return "bad-polygon", f"has {len(part) // 2} point(s); a polygon needs at least 3"
    if not plain_numbers(part):  # the slow path only to name the first bad value
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
    pixels = rle_size[0] * rle_size[1]
    if isinstance(counts, str):
        runs = rle_string_runs(counts)
        if runs is None:
            return "bad-rle", "compressed 'counts' is not a valid COCO RLE string"
        if isinstance(runs, np.ndarray):
            valid = runs.size == 0 or (runs.min() >= 0 and runs.max() < 2**32)
            if not valid or int(runs.sum()) != pixels:
                return "bad-rle", f"run lengths do not add up to the {pixels} pixels of the mask"
            return None
    elif isinstance(counts, list) and all(is_int(v) for v in counts):
        runs = counts
    else:
        return "bad-rle", f"'counts' {show(counts)} is neither an RLE string nor a list of integers"
    if any(not 0 <= run < 2**32 for run in runs) or sum(runs) != pixels:
        return "bad-rle", f"run lengths do not add up to the {pixels} pixels of the mask"
    return None
