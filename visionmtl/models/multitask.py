"""The multi-task network: shared backbone + pyramid, one head per task."""

from __future__ import annotations

from torch import Tensor, nn

from visionmtl.models.backbone import TimmBackbone
from visionmtl.models.neck import PyramidNeck


class MultiTaskModel(nn.Module):
    """Hard parameter sharing: every task head reads the same pyramid.

    torchvision's contract: in training ``model(images, targets)`` returns a dict of named losses
    (``det/cls``, ``sem/ce``, ...); in eval ``model(images)`` returns one dict per image with the
    outputs of every task (``boxes``, ``scores``, ``labels``, ``sem_seg``).

    Args:
        backbone: feature extractor returning maps at ascending strides.
        neck: pyramid over the backbone maps.
        heads: task name (as in ``model.tasks``) -> head with forward / loss / postprocess.
        head_strides: task name -> the pyramid strides its head reads (default: all levels).
    """

    def __init__(
        self,
        backbone: TimmBackbone,
        neck: PyramidNeck,
        heads: dict[str, nn.Module],
        head_strides: dict[str, list[int]] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.heads = nn.ModuleDict(heads)
        head_strides = head_strides or {}
        self.head_levels = {
            task: [neck.strides.index(s) for s in head_strides.get(task, neck.strides)]
            for task in heads
        }

    def _head_features(self, task: str, features: list[Tensor]) -> list[Tensor]:
        return [features[i] for i in self.head_levels[task]]

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    def features(self, images: Tensor) -> list[Tensor]:
        """images [B, 3, H, W] -> shared pyramid maps (ascending stride)."""
        return self.neck(self.backbone(images))

    def forward(
        self,
        images: Tensor,
        targets: list[dict[str, Tensor]] | None = None,
        image_sizes: list[tuple[int, int]] | None = None,
        output_sizes: list[tuple[int, int]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """images [B, 3, H, W] padded batch; targets per the data contract (training).

        In eval, ``image_sizes`` (h, w) are the unpadded sizes (default: the padded size) and
        ``output_sizes`` (h, w) the sizes to rescale predictions to (default: ``image_sizes``)."""
        features = self.features(images)
        padded_shape = (images.shape[-2], images.shape[-1])
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            losses: dict[str, Tensor] = {}
            for task, head in self.heads.items():
                outputs = head(self._head_features(task, features))
                losses.update(head.loss(outputs, targets, padded_shape))
            return losses
        if image_sizes is None:
            image_sizes = [padded_shape] * images.shape[0]
        results: list[dict[str, Tensor]] = [{} for _ in range(images.shape[0])]
        for task, head in self.heads.items():
            outputs = head(self._head_features(task, features))
            for result, prediction in zip(
                results, head.postprocess(outputs, image_sizes, output_sizes), strict=True
            ):
                result.update(prediction)
        return results
