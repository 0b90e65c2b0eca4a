"""The multi-task network: shared backbone + pyramid (or per-task pyramids), one head per task."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionmtl.models.backbone import TimmBackbone
from visionmtl.models.cross_stitch import CrossStitchNeck
from visionmtl.models.neck import PyramidNeck
from visionmtl.models.postprocess import (
    DET_OUTPUTS,
    SEM_OUTPUT,
    PostprocessSettings,
    mask_feature_name,
    postprocess,
)
from visionmtl.structures import ClassSpec, Prediction, Target, labels_instances

# The neck's output: one pyramid (maps by ascending stride), or task -> that task's pyramid.
Features = list[Tensor] | dict[str, list[Tensor]]


class MultiTaskModel(nn.Module):
    """Hard parameter sharing: every task head reads the same pyramid; soft sharing where the
    neck returns one pyramid per task (cross-stitch) or adapters sit before the heads.

    The mask head (``inst``) predicts inside boxes: ground truth (and jittered copies of it) in
    training, the detection head's boxes at inference.

    torchvision's contract: in training ``model(images, targets)`` returns a dict of named losses
    (``det/cls``, ``sem/ce``, ...); in eval ``model(images)`` returns one dict per image with the
    outputs of every task (``boxes``, ``scores``, ``labels``, ``sem_seg``).

    Args:
        backbone: feature extractor returning maps at ascending strides.
        neck: pyramid over the backbone maps (a list of maps), or per-task pyramids (a dict).
        heads: task name (as in ``model.tasks``) -> head with forward / loss / postprocess.
        head_strides: task name -> the pyramid strides its head reads (default: all levels).
        adapters: task name -> module applied to that task's pyramid maps (soft sharing).
        classes: the class lists the labels and semantic ids refer to (:class:`ClassSpec`).
    """

    def __init__(
        self,
        backbone: TimmBackbone,
        neck: PyramidNeck | CrossStitchNeck,
        heads: dict[str, nn.Module],
        head_strides: dict[str, list[int]] | None = None,
        adapters: dict[str, nn.Module] | None = None,
        classes: ClassSpec | None = None,
    ) -> None:
        super().__init__()
        self.classes = classes  # what the outputs' labels and semantic ids mean (plain data)
        self.backbone = backbone
        self.neck = neck
        self.heads = nn.ModuleDict(heads)
        head_strides = head_strides or {}
        self.head_levels = {
            task: [neck.strides.index(s) for s in head_strides.get(task, neck.strides)]
            for task in heads
        }

        # Soft sharing: optional task-specific adapters between the shared pyramid and each head.
        self.adapters = nn.ModuleDict(adapters or {})

    def _head_features(self, task: str, features: Features) -> list[Tensor]:
        """The pyramid maps ``task``'s head reads: its levels of the shared pyramid, or of its own
        pyramid where the neck makes one per task, through its adapters if any."""
        pyramid = features[task] if isinstance(features, dict) else features
        selected = [pyramid[i] for i in self.head_levels[task]]
        return self.adapters[task](selected) if task in self.adapters else selected

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    def features(self, images: Tensor) -> Features:
        """images [B, 3, H, W] -> shared pyramid maps (ascending stride), or task -> its pyramid
        maps with per-task pyramids (cross-stitch)."""
        return self.neck(self.backbone(images))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Where the task gradients meet: the backbone's and the neck's parameters, or with
        cross-stitch the backbone's and the mixing weights (each FPN branch is its task's own)."""
        neck = self.neck.alphas if isinstance(self.neck, CrossStitchNeck) else self.neck
        return [*self.backbone.parameters(), *neck.parameters()]

    def forward(
        self,
        images: Tensor,
        targets: list[Target] | None = None,
        image_sizes: list[tuple[int, int]] | None = None,
        output_sizes: list[tuple[int, int]] | None = None,
        return_features: bool = False,
    ) -> dict[str, Tensor] | list[Prediction] | tuple[dict[str, Tensor], Features]:
        """images [B, 3, H, W] padded batch; targets per the data contract (training).

        In eval, ``image_sizes`` (h, w) are the unpadded sizes (default: the padded size) and
        ``output_sizes`` (h, w) the sizes to rescale predictions to (default: ``image_sizes``)."""
        features = self.features(images)
        padded_shape = (images.shape[-2], images.shape[-1])
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            losses = self._losses(features, targets, padded_shape)
            # Gradient methods acting on the shared features need the pyramid maps too (with
            # cross-stitch, per-task maps: none is shared, so mtl.grad_on: features is refused).
            return (losses, features) if return_features else losses
        if image_sizes is None:
            image_sizes = [padded_shape] * images.shape[0]
        return self._predict(features, image_sizes, output_sizes)

    def _losses(
        self,
        features: Features,
        targets: list[Target],
        padded_shape: tuple[int, int],
    ) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        for task, head in self.heads.items():
            task_features = self._head_features(task, features)
            if task == "inst":
                # Ground-truth boxes (and the head's jittered copies) are the RoIs; images without
                # masks get none. Jittered RoIs stay inside the unpadded image where it is known.
                device = task_features[0].device
                no_boxes = torch.zeros((0, 4), dtype=torch.float32, device=device)
                no_labels = torch.zeros(0, dtype=torch.int64, device=device)
                boxes = [t["boxes"] if labels_instances(t) else no_boxes for t in targets]
                labels = [t["labels"] if labels_instances(t) else no_labels for t in targets]
                sizes = [_image_size(t, padded_shape) for t in targets]
                outputs = head(task_features, boxes, sizes)
                losses.update(head.loss(outputs, targets, boxes, labels))
            else:
                losses.update(head.loss(head(task_features), targets, padded_shape))
        return losses

    def raw_outputs(self, images: Tensor) -> dict[str, Tensor]:
        """images [B, 3, H, W] padded batch -> the heads' raw outputs, tensors only (what the
        ONNX export computes; :func:`~visionmtl.models.postprocess.postprocess` turns them into
        predictions). Keys, per task:

        - det: ``cls_logits`` [B, P, K], ``box_ltrb`` [B, P, 4], ``ctr_logits`` [B, P] over the
          P points of every level, ``points`` [P, 2] (x, y), ``point_strides`` [P];
        - sem: ``sem_logits`` [B, C, H/s, W/s] (s: the semantic head's output stride);
        - inst: ``mask_features_0``, ... [B, C, H/s, W/s]: the pyramid maps the mask head
          reads (it runs on the detected boxes after decoding, see :meth:`mask_logits`)."""
        return self._raw_outputs(self.features(images))

    def _raw_outputs(self, features: Features) -> dict[str, Tensor]:
        raw: dict[str, Tensor] = {}
        if "det" in self.heads:
            outputs = self.heads["det"](self._head_features("det", features))
            raw.update({name: outputs[name] for name in DET_OUTPUTS})
        if "sem" in self.heads:
            raw[SEM_OUTPUT] = self.heads["sem"](self._head_features("sem", features))[SEM_OUTPUT]
        if "inst" in self.heads:
            for level, feature in enumerate(self._head_features("inst", features)):
                raw[mask_feature_name(level)] = feature
        return raw

    def mask_logits(self, features: list[Tensor], rois: Tensor) -> Tensor:
        """The mask head on ``rois`` [R, 5] (image index, xyxy in input pixels) over its pyramid
        maps ``features`` -> mask logits [R, C, M, M] (``MaskHead.mask_logits``)."""
        return self.heads["inst"].mask_logits(features, rois)

    def _predict(
        self,
        features: Features,
        image_sizes: list[tuple[int, int]],
        output_sizes: list[tuple[int, int]] | None,
    ) -> list[Prediction]:
        settings = PostprocessSettings.from_model(self)
        raw = self._raw_outputs(features)
        return postprocess(raw, image_sizes, output_sizes, settings, self.mask_logits)


def _image_size(target: Target, padded_shape: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the unpadded image: the target's ``image_size`` (set by the data sets), else the
    padded input size."""
    if "image_size" not in target:
        return padded_shape
    height, width = target["image_size"].tolist()
    return int(height), int(width)
