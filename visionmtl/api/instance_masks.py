"""Instance masks of one image kept as crops of their boxes: the memory is the sum of the box areas,
not one full image per instance (100 detections on a 12-megapixel photo would be 1.2 GB of bool)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class InstanceMasks:
    """N bool masks of an ``image_size`` (H, W) image, each stored as the crop of its region.

    ``crops[i]`` is bool ``[y_hi - y_lo, x_hi - x_lo]`` and ``regions[i]`` = (x_lo, y_lo, x_hi,
    y_hi) int64 says where it lies; every pixel outside the region is False. It reads like the
    dense ``[N, H, W]`` bool array where a full mask is needed: ``masks[i]`` is mask i ``[H, W]``,
    ``np.asarray(masks)`` the dense stack (allocated on request), ``len``, ``shape`` and ``dtype``
    as an array's. An index array or slice selects a subset (still cropped). It is not an
    ndarray: ``==``, ``.sum()`` and other array methods need ``np.asarray(masks)`` first.
    """

    dtype = np.dtype(bool)
    ndim = 3

    def __init__(
        self, crops: Sequence[np.ndarray], regions: np.ndarray, image_size: tuple[int, int]
    ) -> None:
        regions = np.asarray(regions, np.int64).reshape(-1, 4)
        height, width = int(image_size[0]), int(image_size[1])
        if len(crops) != len(regions):
            raise ValueError(f"InstanceMasks got {len(crops)} crops but {len(regions)} regions")
        for crop, (x_lo, y_lo, x_hi, y_hi) in zip(crops, regions, strict=True):
            inside = 0 <= x_lo <= x_hi <= width and 0 <= y_lo <= y_hi <= height
            if not inside or np.shape(crop) != (y_hi - y_lo, x_hi - x_lo):
                raise ValueError(
                    f"InstanceMasks: a crop of shape {np.shape(crop)} does not fit its region "
                    f"{[int(v) for v in (x_lo, y_lo, x_hi, y_hi)]} of a {height}x{width} image"
                )
        self.crops = tuple(np.asarray(crop, bool) for crop in crops)
        self.regions = regions
        self.image_size = (height, width)

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> InstanceMasks:
        """Dense masks ``[N, H, W]`` (any dtype; non-zero is foreground), each cropped to the
        bounding box of its pixels."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ValueError(f"instance masks must be [N, H, W], got shape {masks.shape}")
        crops, regions = [], []
        for mask in masks.astype(bool, copy=False):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if len(rows) == 0:
                crops.append(np.zeros((0, 0), bool))
                regions.append((0, 0, 0, 0))
                continue
            y_lo, y_hi, x_lo, x_hi = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            crops.append(mask[y_lo:y_hi, x_lo:x_hi].copy())
            regions.append((x_lo, y_lo, x_hi, y_hi))
        return cls(crops, np.asarray(regions, np.int64).reshape(-1, 4), masks.shape[1:])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.crops), *self.image_size)

    def __len__(self) -> int:
        return len(self.crops)

    def __repr__(self) -> str:
        return f"InstanceMasks({len(self)} masks, image_size={self.image_size})"

    def __getitem__(self, index: Any) -> np.ndarray | InstanceMasks:
        if isinstance(index, tuple) and index and isinstance(index[0], int | np.integer):
            return self.dense(int(index[0]))[index[1:]]  # masks[i, y0:y1, x]
        if isinstance(index, int | np.integer):
            return self.dense(int(index))
        if isinstance(index, tuple):
            raise TypeError(
                f"InstanceMasks[{index!r}]: index one mask first (masks[i, ...]) or use "
                "np.asarray(masks) for the dense [N, H, W] array"
            )
        chosen = np.arange(len(self))[index]  # slice, int array or bool array
        return InstanceMasks([self.crops[i] for i in chosen], self.regions[chosen], self.image_size)

    def __eq__(self, other: object) -> bool:
        # an array would compare pixel by pixel; an object identity answer would be wrong
        raise TypeError("compare InstanceMasks as arrays: np.asarray(a) == np.asarray(b)")

    __hash__ = None  # type: ignore[assignment]

    def dense(self, index: int) -> np.ndarray:
        """Mask ``index`` as bool ``[H, W]``."""
        mask = np.zeros(self.image_size, bool)
        self._paste(index, mask)
        return mask

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        stack = np.zeros(self.shape, bool)
        for k in range(len(self)):
            self._paste(k, stack[k])
        return stack if dtype is None else stack.astype(dtype)

    def _paste(self, index: int, canvas: np.ndarray) -> None:
        x_lo, y_lo, x_hi, y_hi = self.regions[index]
        canvas[y_lo:y_hi, x_lo:x_hi] = self.crops[index]

    def areas(self) -> np.ndarray:
        """Foreground pixels per mask, int64 ``[N]``."""
        return np.asarray([int(crop.sum()) for crop in self.crops], np.int64)

    def to_rle(self) -> list[dict[str, Any]]:
        """COCO RLE per mask (``counts`` as str, JSON-ready), one full-size mask at a time."""
        from pycocotools import mask as mask_util

        rles = []
        for k in range(len(self)):
            rle = mask_util.encode(np.asfortranarray(self.dense(k), dtype=np.uint8))
            rles.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()})
        return rles
