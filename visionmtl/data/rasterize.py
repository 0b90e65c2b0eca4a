"""COCO segmentations drawn straight at the size training needs, never at full image size.

A training sample needs, per instance, the mask the mask head learns (only inside the instance's
box: the RoIs are the box and jittered copies of it) and a semantic map at the resized image's
size. Decoding every instance at the original size and resizing it, as a full-image mask pipeline
does, costs instances x image pixels per sample. Here a polygon is rasterised by pycocotools
directly onto the grid that is wanted (a ``MASK_CROP_SIZE`` square over the box for the mask
head, the box's pixels of the resized image for the semantic map), as Detectron2 rasterises
polygons into each box; an RLE is decoded once and resampled onto those grids. Regions are
``[x0, y0, x1, y1]`` in pixel-edge coordinates of the original image (pixel ``k`` spans
``[k, k + 1)``, COCO's convention).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from visionmtl.structures import IGNORE_INDEX, MASK_CROP_SIZE


class Segment:
    """One annotation's ``segmentation`` (polygons, or RLE) on a ``height`` x ``width`` image.

    :meth:`render` draws it onto any axis-aligned grid; an RLE is decoded once, here (so a broken
    one fails where the caller can name the annotation)."""

    def __init__(self, segmentation: Any, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.polygons: list[list[float]] | None = None
        self._decoded: np.ndarray | None = None
        if isinstance(segmentation, list):
            self.polygons = [p for p in segmentation if len(p) >= 6]
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            self._decoded = decode_rle(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | bytes):
            counts = segmentation["counts"]
            rle = {
                "size": segmentation["size"],
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
            self._decoded = decode_rle(rle)
        else:
            raise ValueError("segmentation is neither a polygon list nor an RLE dict with 'counts'")

    def full(self) -> np.ndarray:
        """The mask at the original size, uint8 ``[height, width]`` (0/1)."""
        if self._decoded is None:
            region = (0.0, 0.0, float(self.width), float(self.height))
            return self.render(region, self.height, self.width)
        return self._decoded

    def render(self, region: Sequence[float], out_h: int, out_w: int) -> np.ndarray:
        """The mask over ``region`` (original pixels, xyxy) sampled onto ``out_h`` x ``out_w``
        cells: uint8 ``[out_h, out_w]`` (0/1), 0 outside the image."""
        x0, y0, x1, y1 = (float(v) for v in region)
        scale_x, scale_y = out_w / max(x1 - x0, 1e-6), out_h / max(y1 - y0, 1e-6)
        if self._decoded is None:
            if not self.polygons:
                return np.zeros((out_h, out_w), np.uint8)
            assert self.polygons is not None
            moved = [
                np.column_stack(
                    (
                        (np.asarray(p[0::2], np.float64) - x0) * scale_x,
                        (np.asarray(p[1::2], np.float64) - y0) * scale_y,
                    )
                ).ravel()
                for p in self.polygons
            ]
            return decode_rle(mask_utils.merge(mask_utils.frPyObjects(moved, out_h, out_w)))
        # Nearest pixel to each cell centre, in numpy: cv2.warpAffine's thread pool hangs in a
        # DataLoader worker forked after the parent process used it.
        rows = _nearest(y0, 1 / scale_y, out_h, self.height)
        cols = _nearest(x0, 1 / scale_x, out_w, self.width)
        picked = self._decoded[rows.clip(0)[:, None], cols.clip(0)[None, :]]
        return np.where((rows >= 0)[:, None] & (cols >= 0)[None, :], picked, 0).astype(np.uint8)


def _nearest(start: float, step: float, count: int, size: int) -> np.ndarray:
    """Index of the pixel holding each of ``count`` cell centres ``start + (k + 0.5) * step``,
    -1 where it is outside ``0..size - 1``."""
    index = np.floor(start + (np.arange(count) + 0.5) * step).astype(np.int64)
    return np.where((index >= 0) & (index < size), index, -1)


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """``pycocotools.mask.decode`` of one RLE to C-ordered uint8 ``[H, W]``, without its numpy-2
    DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*__array__ implementation", category=DeprecationWarning
        )
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def crop_regions(boxes: np.ndarray, size: int = MASK_CROP_SIZE) -> np.ndarray:
    """boxes ``[N, 4]`` xyxy -> the regions ``[N, 4]`` their ``size`` x ``size`` mask crops cover:
    each box with one cell of margin per side, so the crop's border cells are outside the box
    (0 for a mask inside its box) and RoIs reaching past the box read 0, as on a full mask. A mask
    that reaches outside its box (a box drawn too tight) is cut at the region."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cells = (boxes[:, 2:] - boxes[:, :2]) / (size - 2)
    return np.concatenate([boxes[:, :2] - cells, boxes[:, 2:] + cells], axis=1)


def paint_semantic(
    canvas: np.ndarray,
    pieces: Sequence[tuple[tuple[int, int, int, int], np.ndarray, int]],
    crowd: Sequence[tuple[tuple[int, int, int, int], np.ndarray]] = (),
) -> np.ndarray:
    """Paint instance ``pieces`` ``((x0, y0, x1, y1) integer cells, mask [y1 - y0, x1 - x0], value)``
    onto the semantic ``canvas`` ``[H, W]`` in place, largest mask first so that small instances stay
    visible on top of large ones, then every ``crowd`` piece as ``IGNORE_INDEX``. Returns ``canvas``."""
    areas = [int(np.count_nonzero(mask)) for _, mask, _ in pieces]
    for index in np.argsort(-np.asarray(areas, np.int64), kind="stable"):
        (x0, y0, x1, y1), mask, value = pieces[index]
        np.copyto(canvas[y0:y1, x0:x1], value, where=mask.astype(bool))
    for (x0, y0, x1, y1), mask in crowd:
        np.copyto(canvas[y0:y1, x0:x1], IGNORE_INDEX, where=mask.astype(bool))
    return canvas


def pixel_region(box: Sequence[float], scale: tuple[float, float], size: tuple[int, int]) -> tuple:
    """The whole cells ``(x0, y0, x1, y1)`` of a ``size`` (h, w) image scaled by ``scale`` (x, y)
    from the original that cover ``box`` (original pixels) plus one cell, clipped to the image."""
    scale_x, scale_y = scale
    height, width = size
    x0 = max(0, math.floor(box[0] * scale_x) - 1)
    y0 = max(0, math.floor(box[1] * scale_y) - 1)
    x1 = min(width, math.ceil(box[2] * scale_x) + 1)
    y1 = min(height, math.ceil(box[3] * scale_y) + 1)
    return x0, y0, max(x0, x1), max(y0, y1)


class Shapes:
    """What the segmentations of a ``height`` x ``width`` image draw: ``segments[i]`` is the
    instance of box ``i`` and paints semantic id ``values[i]``; ``crowd`` regions are painted
    ``IGNORE_INDEX``; the rest of the semantic map is ``background``."""

    def __init__(
        self,
        height: int,
        width: int,
        segments: Sequence[Segment],
        values: np.ndarray,
        crowd: Sequence[Segment] = (),
        background: int = 0,
    ) -> None:
        if len(segments) != len(values):
            raise ValueError(f"got {len(segments)} segments but {len(values)} semantic values")
        if any(not 0 <= int(v) <= 255 for v in [*values, background]):
            raise ValueError("sem_seg values must lie in 0..255")
        self.height, self.width = height, width
        self.segments, self.values = list(segments), np.asarray(values, np.int64)
        self.crowd, self.background = list(crowd), int(background)

    def draw(
        self,
        boxes: np.ndarray,
        kept: np.ndarray,
        scale: tuple[float, float],
        out_size: tuple[int, int],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw the semantic map of every instance and the mask crops of those ``kept`` (indices
        into ``segments``: the boxes the transform kept) on an image scaled by ``scale`` (x, y) to
        ``out_size`` (h, w), not mirrored; ``boxes`` ``[N, 4]`` are the original boxes, all N.
        An instance whose box became too small to train on is still its class in the map.

        Returns ``mask_crops`` uint8 ``[K, S, S]`` (S = ``MASK_CROP_SIZE``) over the regions
        ``[K, 4]`` float64 (original pixels, see :func:`crop_regions`) and the semantic map
        uint8 ``[h, w]``."""
        out_h, out_w = out_size
        scale_x, scale_y = scale
        pieces = []
        for segment, box, value in zip(self.segments, boxes, self.values, strict=True):
            cells = pixel_region(box, scale, out_size)
            x0, y0, x1, y1 = cells
            if x1 > x0 and y1 > y0:
                region = (x0 / scale_x, y0 / scale_y, x1 / scale_x, y1 / scale_y)
                pieces.append((cells, segment.render(region, y1 - y0, x1 - x0), int(value)))
        whole = (0.0, 0.0, float(self.width), float(self.height))
        crowd = [((0, 0, out_w, out_h), c.render(whole, out_h, out_w)) for c in self.crowd]
        canvas = np.full((out_h, out_w), self.background, np.uint8)
        sem_seg = paint_semantic(canvas, pieces, crowd)
        regions = crop_regions(boxes[kept])
        size = MASK_CROP_SIZE
        crops = [self.segments[i].render(r, size, size) for i, r in zip(kept, regions, strict=True)]
        mask_crops = np.stack(crops) if crops else np.zeros((0, size, size), np.uint8)
        return mask_crops, regions, sem_seg
