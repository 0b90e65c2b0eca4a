"""From the network's raw outputs to per-image predictions: decoding, NMS, mask pasting, resizing.

One function, :func:`postprocess`, for every way of running the network: ``MultiTaskModel`` in
evaluation, the PyTorch ``Predictor`` and the ONNX Runtime ``OnnxPredictor``. Only how the
network and the mask head are run differs; what is done with their outputs is this code, so the
results agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
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
MASK_FEATURES = "mask_features"  # mask_feature_name(level): the pyramid maps the mask head reads

# features [B, C, H/s, W/s] per level the mask head reads, RoIs [R, 5] -> mask logits [R, C, M, M].
MaskLogitsFn = Callable[[list[Tensor], Tensor], Tensor]


@dataclass(frozen=True)
class PostprocessSettings:
    """What :func:`postprocess` needs besides the outputs: plain data, saved with an export.

    Every field is required: the values come from the model's heads (:meth:`from_model`, which
    take them from the config's ``eval.*``) or from an export's ``model.json``, never from
    defaults here. The fields of a task the model does not have are None.

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
    num_classes: int | None
    score_thresh: float | None
    nms_thresh: float | None
    max_detections: int | None
    pre_nms_topk: int | None
    sem_stride: int | None
    sem_first_class: int | None
    class_agnostic: bool | None
    mask_threshold: float | None

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> PostprocessSettings:
        """The settings of a ``MultiTaskModel``'s heads (their current values)."""
        heads = model.heads
        values: dict[str, Any] = {"tasks": tuple(heads.keys()), **dict.fromkeys(_FIELD_TYPES)}
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
    def from_dict(cls, data: Mapping[str, Any]) -> PostprocessSettings:
        """The inverse of :meth:`to_dict`, checked: ``ValueError`` naming the key where one is
        missing, unknown or of the wrong type, or None for a task in ``tasks``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected an object with the keys {_field_names()}, got {data!r}")
        unknown = sorted(set(data) - set(_field_names()))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; the keys are {_field_names()}")
        missing = [name for name in _field_names() if name not in data]
        if missing:
            raise ValueError(f"missing key(s) {missing}")
        tasks = data["tasks"]
        if not isinstance(tasks, (list, tuple)) or not set(tasks) <= set(_TASK_FIELDS):
            raise ValueError(f'"tasks" is {tasks!r}, expected a list of {list(_TASK_FIELDS)}')
        required = {name for task in tasks for name in _TASK_FIELDS[task]}
        for name, kind in _FIELD_TYPES.items():
            value = data[name]
            if value is None and name not in required:
                continue
            if not _is_instance(value, kind):
                raise ValueError(f'"{name}" is {value!r}, expected {kind.__name__}')
        return cls(**{**data, "tasks": tuple(tasks)})


# The fields each task needs (the others are None in a model without that task), and their type.
_TASK_FIELDS = {
    "det": ("num_classes", "score_thresh", "nms_thresh", "max_detections", "pre_nms_topk"),
    "sem": ("sem_stride", "sem_first_class"),
    "inst": ("class_agnostic", "mask_threshold"),
}
_FIELD_TYPES: dict[str, type] = {
    "num_classes": int,
    "score_thresh": float,
    "nms_thresh": float,
    "max_detections": int,
    "pre_nms_topk": int,
    "sem_stride": int,
    "sem_first_class": int,
    "class_agnostic": bool,
    "mask_threshold": float,
}


def _field_names() -> list[str]:
    return [field.name for field in fields(PostprocessSettings)]


def _is_instance(value: Any, kind: type) -> bool:
    """JSON's view of ``kind``: an int is a float, a bool is neither."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    return isinstance(value, (int, float) if kind is float else kind)


def mask_feature_name(level: int) -> str:
    """The raw output name of the ``level``-th pyramid map the mask head reads (from 0, by
    ascending stride): ``mask_features_0``, ..."""
    return f"{MASK_FEATURES}_{level}"


def mask_features(raw: Mapping[str, Tensor]) -> list[Tensor]:
    """The pyramid maps [B, C, H/s, W/s] of ``raw`` the mask head reads, ascending stride."""
    count = sum(name.startswith(MASK_FEATURES + "_") for name in raw)
    return [raw[mask_feature_name(level)] for level in range(count)]


@torch.no_grad()
def postprocess(
    raw: dict[str, Tensor],
    image_sizes: list[tuple[int, int]],
    output_sizes: list[tuple[int, int]] | None,
    settings: PostprocessSettings,
    mask_logits_fn: MaskLogitsFn | None = None,
    mask_crops: bool = False,
) -> list[Prediction]:
    """Raw outputs of a batch (``MultiTaskModel.raw_outputs``) -> one prediction dict per image.

    ``image_sizes`` (h, w) are the unpadded input sizes; ``output_sizes`` (h, w) the sizes to
    rescale to (None: stay at ``image_sizes``). Per image: ``sem_seg`` [h, w] int64; ``boxes``
    [K, 4] xyxy, ``scores`` [K] descending, ``labels`` [K] contiguous; ``masks`` [K, h, w] bool,
    from ``mask_logits_fn`` (the mask head) run on the detected boxes in input pixels. With
    ``mask_crops`` (the Predictor: no full-image mask per detection) ``mask_crops`` and
    ``mask_regions`` instead of ``masks`` (see ``paste_mask_crops``)."""
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
            crops=mask_crops,
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
