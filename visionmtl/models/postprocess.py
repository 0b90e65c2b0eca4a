"""From the network's raw outputs to per-image predictions: decoding, NMS, mask pasting, resizing.

One function, :func:`postprocess`, for every way of running the network: ``MultiTaskModel`` in
evaluation, the PyTorch ``Predictor`` and the ONNX Runtime ``OnnxPredictor``. Only how the
network and the mask head are run differs; what is done with their outputs is this code, so the
results agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from visionmtl.models.heads.detection import decode_detections, scale_boxes
from visionmtl.models.heads.instance import boxes_to_rois, paste_instance_masks
from visionmtl.models.heads.semantic import semantic_labels
from visionmtl.structures import Prediction

# Raw output names of the detection head (``FCOSHead.forward`` keys needed at inference).
DET_OUTPUTS = ("cls_logits", "box_ltrb", "ctr_logits", "points", "point_strides")
SEM_OUTPUT = "sem_logits"
MASK_FEATURES = "mask_features"  # + "_{level}": the pyramid maps the mask head reads

# features [B, C, H/s, W/s] per level the mask head reads, RoIs [R, 5] -> mask logits [R, C, M, M].
MaskLogitsFn = Callable[[list[Tensor], Tensor], Tensor]


@dataclass(frozen=True)
class PostprocessSettings:
    """What :func:`postprocess` needs besides the outputs: plain data, saved with an export.

    Attributes:
        tasks: the model's tasks (``det``, ``sem``, ``inst``).
        num_classes: detection classes.
        score_thresh, nms_thresh, max_detections, pre_nms_topk: the detection head's inference
            settings (``eval.*`` of the config).
        sem_stride: output stride of ``sem_logits``.
        sem_first_class: 0, or 1 where the semantic head does not predict background.
        class_agnostic: the mask head predicts one mask channel, not one per class.
        mask_threshold: probability threshold of the pasted masks.
    """

    tasks: tuple[str, ...]
    num_classes: int = 0
    score_thresh: float = 0.05
    nms_thresh: float = 0.6
    max_detections: int = 100
    pre_nms_topk: int = 1000
    sem_stride: int = 8
    sem_first_class: int = 0
    class_agnostic: bool = False
    mask_threshold: float = 0.5

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> PostprocessSettings:
        """The settings of a ``MultiTaskModel``'s heads (their current values)."""
        heads = model.heads
        values: dict[str, Any] = {"tasks": tuple(heads.keys())}
        if "det" in heads:
            det = heads["det"]
            values.update(
                num_classes=det.num_classes,
                score_thresh=det.score_thresh,
                nms_thresh=det.nms_thresh,
                max_detections=det.max_detections,
                pre_nms_topk=det.pre_nms_topk,
            )
        if "sem" in heads:
            values.update(
                sem_stride=heads["sem"].strides[0], sem_first_class=heads["sem"].first_class
            )
        if "inst" in heads:
            inst = heads["inst"]
            values.update(class_agnostic=inst.class_agnostic, mask_threshold=inst.mask_threshold)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": list(self.tasks)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostprocessSettings:
        return cls(**{**data, "tasks": tuple(data["tasks"])})


def mask_features(raw: dict[str, Tensor]) -> list[Tensor]:
    """The pyramid maps [B, C, H/s, W/s] of ``raw`` the mask head reads, ascending stride."""
    names = sorted(
        (name for name in raw if name.startswith(MASK_FEATURES + "_")),
        key=lambda name: int(name.rsplit("_", 1)[1]),
    )
    return [raw[name] for name in names]


@torch.no_grad()
def postprocess(
    raw: dict[str, Tensor],
    image_sizes: list[tuple[int, int]],
    output_sizes: list[tuple[int, int]] | None,
    settings: PostprocessSettings,
    mask_logits_fn: MaskLogitsFn | None = None,
) -> list[Prediction]:
    """Raw outputs of a batch (``MultiTaskModel.raw_outputs``) -> one prediction dict per image.

    ``image_sizes`` (h, w) are the unpadded input sizes; ``output_sizes`` (h, w) the sizes to
    rescale to (None: stay at ``image_sizes``). Per image: ``sem_seg`` [h, w] int64; ``boxes``
    [K, 4] xyxy, ``scores`` [K] descending, ``labels`` [K] contiguous; ``masks`` [K, h, w] bool,
    from ``mask_logits_fn`` (the mask head) run on the detected boxes in input pixels."""
    results: list[Prediction] = [{} for _ in image_sizes]
    if "sem" in settings.tasks:
        semantic = semantic_labels(
            raw[SEM_OUTPUT],
            settings.sem_stride,
            settings.sem_first_class,
            image_sizes,
            output_sizes,
        )
        for result, prediction in zip(results, semantic, strict=True):
            result.update(prediction)
    if "det" not in settings.tasks:
        return results
    detections = decode_detections(
        {name: raw[name] for name in DET_OUTPUTS},
        image_sizes,
        settings.num_classes,
        settings.score_thresh,
        settings.nms_thresh,
        settings.max_detections,
        settings.pre_nms_topk,
    )
    mask_logits = None
    if "inst" in settings.tasks:  # masks for the detected boxes, in input coordinates
        if mask_logits_fn is None:
            raise ValueError(
                "postprocess: a model with 'inst' needs mask_logits_fn (its mask head)"
            )
        mask_logits = _mask_logits(raw, detections, mask_logits_fn)
    if output_sizes is not None:
        for detection, image_size, output_size in zip(
            detections, image_sizes, output_sizes, strict=True
        ):
            detection["boxes"] = scale_boxes(detection["boxes"], image_size, output_size)
    if mask_logits is not None:
        counts = [d["boxes"].shape[0] for d in detections]
        masks = paste_instance_masks(
            mask_logits,
            counts,
            detections,
            image_sizes,
            output_sizes,
            settings.class_agnostic,
            settings.mask_threshold,
        )
        for detection, mask in zip(detections, masks, strict=True):
            detection.update(mask)
    for result, detection in zip(results, detections, strict=True):
        result.update(detection)
    return results


def _mask_logits(
    raw: dict[str, Tensor], detections: list[Prediction], mask_logits_fn: MaskLogitsFn
) -> Tensor:
    """Mask logits [sum K_i, C, M, M] of every image's detected boxes; with no box in the batch
    the head is not run (an empty [0, 1, 1, 1] stands in: nothing is pasted from it)."""
    features = mask_features(raw)
    rois = boxes_to_rois([d["boxes"] for d in detections]).to(features[0].device)
    if rois.shape[0] == 0:
        return features[0].new_zeros((0, 1, 1, 1))
    return mask_logits_fn(features, rois)
