"""Semantic segmentation evaluation: confusion matrix, per-class IoU, mIoU, pixel accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from visionmtl.structures import IGNORE_INDEX


class SemSegEvaluator:
    """Accumulate a confusion matrix over images and report IoU metrics.

    Args:
        num_classes: number of classes including background (index 0).
        class_names: one name per class; ``class_names[0]`` is the background ("background").
        ignore_index: target value of pixels that are not scored (crowd regions, padding).
        background: whether class 0 is scored; without it (a model that predicts no background,
            see ``ClassSpec.sem_background``) target 0 is not scored and class 0 is not reported.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: list[str],
        ignore_index: int = IGNORE_INDEX,
        background: bool = True,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} entries but num_classes is {num_classes} "
                "(background included)"
            )
        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.first_class = 0 if background else 1
        # rows: target class, columns: predicted class
        self.confusion_matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Forget everything processed so far."""
        self.confusion_matrix.zero_()

    def shard_state(self) -> Tensor:
        """The confusion matrix [C, C] of the images processed here (for :meth:`add_shard`)."""
        return self.confusion_matrix.clone()

    def add_shard(self, state: Tensor) -> None:
        """Add the images another evaluator processed (its :meth:`shard_state`)."""
        self.confusion_matrix += state.to(self.confusion_matrix)

    def process(self, predictions: Sequence[Tensor], targets: Sequence[Tensor]) -> None:
        """Add images to the confusion matrix.

        Args:
            predictions: per image [H, W] int64 class indices in ``0..num_classes-1``.
            targets: per image [H, W] int64, same shape; ``ignore_index`` pixels are skipped.
        """
        if len(predictions) != len(targets):
            raise ValueError(
                f"process() got {len(predictions)} predictions but {len(targets)} targets"
            )
        n = self.num_classes
        for index, (prediction, target) in enumerate(zip(predictions, targets, strict=True)):
            if prediction.shape != target.shape:
                raise ValueError(
                    f"image {index} of the batch: prediction shape {tuple(prediction.shape)} "
                    f"differs from target shape {tuple(target.shape)}"
                )
            prediction = prediction.detach().to("cpu", torch.int64).reshape(-1)
            target = target.detach().to("cpu", torch.int64).reshape(-1)
            scored = (target != self.ignore_index) & (target >= self.first_class)
            prediction, target = prediction[scored], target[scored]
            for what, values in (("target", target), ("prediction", prediction)):
                if values.numel() and (values.min() < 0 or values.max() >= n):
                    bad = torch.unique(values[(values < 0) | (values >= n)]).tolist()
                    raise ValueError(
                        f"image {index} of the batch: {what} has class values {bad} outside "
                        f"0..{n - 1} (ignore_index is {self.ignore_index})"
                    )
            counts = torch.bincount(target * n + prediction, minlength=n * n)
            self.confusion_matrix += counts.reshape(n, n)

    def evaluate(self) -> dict[str, Any]:
        """Metrics from the accumulated confusion matrix.

        Returns:
            ``mIoU`` (mean IoU over classes whose union > 0; None if there are none),
            ``pixel_acc`` (None if no pixel was scored) and ``per_class``:
            ``{name: {"IoU": x}}`` with None where the class is in neither prediction nor target.
        """
        confusion = self.confusion_matrix.to(torch.float64)
        true_positive = confusion.diagonal()
        union = confusion.sum(dim=0) + confusion.sum(dim=1) - true_positive
        present = union > 0
        present[: self.first_class] = False
        iou = torch.where(present, true_positive / union.clamp(min=1), torch.zeros_like(union))
        total = confusion.sum()
        return {
            "mIoU": float(iou[present].mean()) if present.any() else None,
            "pixel_acc": float(true_positive.sum() / total) if total > 0 else None,
            "per_class": {
                name: {"IoU": float(iou[k]) if present[k] else None}
                for k, name in enumerate(self.class_names)
                if k >= self.first_class
            },
        }
