"""Panoptic merge (Panoptic FPN, Kirillov et al. 2019): instances over the semantic map."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from visionmtl.api.instance_masks import InstanceMasks


@dataclass
class Segment:
    """One segment of a panoptic map."""

    id: int
    category_id: int
    isthing: bool
    score: float
    area: int


def merge_panoptic(
    masks: InstanceMasks | np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    sem_seg: np.ndarray | None,
    score_thresh: float = 0.5,
    overlap_thresh: float = 0.5,
    stuff_area_thresh: int = 64,
    thing_ids: Collection[int] = (),
) -> tuple[np.ndarray, list[Segment]]:
    """Paint instances by decreasing score, each only where no earlier one painted; drop an
    instance if less than ``overlap_thresh`` of its mask is still free. Then fill the remaining
    pixels with semantic-segmentation regions (non-zero ids that are not in ``thing_ids``, the
    detection categories) of at least ``stuff_area_thresh`` pixels, as "stuff" segments; thing
    pixels no kept instance covers stay unassigned (as in Panoptic FPN).

    masks [N, H, W] bool (:class:`InstanceMasks` or dense), scores [N], labels [N] category ids,
    sem_seg [H, W] category ids (0 = none). Returns an id map [H, W] int32 (0 = unassigned) and
    its segments; segments never overlap. Work per instance: its box, not the image."""
    if not isinstance(masks, InstanceMasks):
        masks = InstanceMasks.from_dense(masks)
    height, width = sem_seg.shape if sem_seg is not None else masks.image_size
    panoptic = np.zeros((height, width), np.int32)
    segments: list[Segment] = []
    for index in np.argsort(-scores, kind="stable"):
        if scores[index] < score_thresh:
            break
        mask = masks.crops[index]
        x_lo, y_lo, x_hi, y_hi = masks.regions[index]
        window = panoptic[y_lo:y_hi, x_lo:x_hi]  # a view: painting it paints the map
        area = int(mask.sum())
        free = mask & (window == 0)
        free_area = int(free.sum())
        if free_area == 0 or free_area / area < overlap_thresh:
            continue
        segment_id = len(segments) + 1
        window[free] = segment_id
        segments.append(
            Segment(segment_id, int(labels[index]), True, float(scores[index]), free_area)
        )
    things = {int(i) for i in thing_ids}
    if sem_seg is not None:
        for category_id in np.unique(sem_seg):
            if category_id == 0 or int(category_id) in things:
                continue
            region = (sem_seg == category_id) & (panoptic == 0)
            area = int(region.sum())
            if area < stuff_area_thresh:
                continue
            segment_id = len(segments) + 1
            panoptic[region] = segment_id
            segments.append(Segment(segment_id, int(category_id), False, 1.0, area))
    return panoptic, segments
