"""What the Predictor returns for one image, at the original image size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from visionmtl.api.instance_masks import InstanceMasks


@dataclass
class Result:
    """Predictions for one image in its original pixel coordinates.

    Attributes:
        boxes: [N, 4] float32 xyxy.
        scores: [N] float32, descending.
        labels: [N] int64 data set category ids (as in the training JSON).
        label_names: N category names.
        sem_seg: [H, W] int64 semantic id per pixel, 0 = background (models that predict one);
            None without the ``sem`` task.
            A detection category's id is its JSON category id; classes of the semantic head's own
            list (``model.sem.class_names``) that are not categories get ids above every
            category id. ``sem_class_names`` names each id.
        image_size: (H, W) of the original image.
        masks: the N instance masks, one per box (:class:`InstanceMasks`: stored cropped to
            their boxes, read as a bool [N, H, W] array: ``masks[i]``, ``np.asarray(masks)``,
            ``masks.to_rle()``); None without the ``inst`` task. A dense array given here is
            converted.
        sem_class_names: semantic id -> class name (0: "background" when the model predicts
            it); empty without ``sem``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    sem_seg: np.ndarray | None
    image_size: tuple[int, int]
    masks: InstanceMasks | None = None
    sem_class_names: dict[int, str] = field(default_factory=dict)
    thing_ids: tuple[int, ...] = ()  # the detection categories' ids (for panoptic())

    def __post_init__(self) -> None:
        if self.masks is not None and not isinstance(self.masks, InstanceMasks):
            self.masks = InstanceMasks.from_dense(self.masks)

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: boxes/scores/labels as lists; ``sem_seg`` as pixel counts per category id."""
        out: dict[str, Any] = {
            "image_size": list(self.image_size),
            "boxes": self.boxes.round(2).tolist(),
            "scores": self.scores.round(4).tolist(),
            "labels": self.labels.tolist(),
            "label_names": list(self.label_names),
        }
        if self.masks is not None:
            out["mask_areas"] = self.masks.areas().tolist()
        if self.sem_seg is not None:
            ids, counts = np.unique(self.sem_seg, return_counts=True)
            out["sem_seg_pixels"] = {int(i): int(c) for i, c in zip(ids, counts, strict=True)}
            out["sem_class_names"] = {int(i): name for i, name in self.sem_class_names.items()}
        return out

    def panoptic(
        self, score_thresh: float = 0.5, overlap_thresh: float = 0.5, stuff_area_thresh: int = 64
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Merge instance masks over the semantic map into one id map [H, W] int32 (0 = void) and a
        segment list (id, category_id, isthing, score, area); see :func:`merge_panoptic`. Semantic
        regions of detection categories are not stuff: only instances make thing segments."""
        from visionmtl.api.panoptic import merge_panoptic

        if self.masks is None:
            raise ValueError(
                "panoptic() needs instance masks: train with model.tasks including 'inst'"
            )
        id_map, segments = merge_panoptic(
            self.masks,
            self.scores,
            self.labels,
            self.sem_seg,
            score_thresh,
            overlap_thresh,
            stuff_area_thresh,
            thing_ids=self.thing_ids,
        )
        return id_map, [asdict(segment) for segment in segments]

    def plot(self, image: np.ndarray, **options: Any) -> np.ndarray:
        """The image [H, W, 3] uint8 with the semantic map, instance masks and boxes drawn on it,
        and a legend of the semantic classes shown on its right. ``options`` switch parts off
        (``sem=``, ``masks=``, ``boxes=``, ``legend=``, ``scores=``) or set ``alpha`` and
        ``legend_all``; see ``draw_result``."""
        from visionmtl.api.visualize import draw_result

        return draw_result(image, self, **options)
