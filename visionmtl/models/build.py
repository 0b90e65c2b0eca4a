"""Assemble a MultiTaskModel from the model/eval configuration."""

from __future__ import annotations

from torch import nn

from visionmtl.config import MTL_SHARING, EvalConfig, ModelConfig
from visionmtl.models.adapters import TaskAdapters
from visionmtl.models.backbone import TimmBackbone, backbone_freezing
from visionmtl.models.cross_stitch import CrossStitchNeck
from visionmtl.models.heads import FCOSHead, MaskHead, SemanticFPNHead
from visionmtl.models.multitask import MultiTaskModel
from visionmtl.models.neck import PyramidNeck
from visionmtl.structures import ClassSpec, check_sem_class_count


def build_model(
    cfg: ModelConfig,
    classes: ClassSpec,
    eval_cfg: EvalConfig | None = None,
    sharing: str = "hard",
) -> MultiTaskModel:
    """Backbone -> FPN (P3-P7) -> the heads named in ``cfg.tasks``, for ``classes`` (made from the
    training data; the model keeps them as ``model.classes``, checkpoints store them).

    ``sharing`` is ``mtl.sharing``: "hard" (every head reads the shared pyramid), "adapters"
    (each task reads it through its own residual adapters) or "cross_stitch" (each task has its
    own pyramid over the shared backbone, mixed with the others' at every level)."""
    if sharing not in MTL_SHARING:
        raise ValueError(f"mtl.sharing: unknown sharing {sharing!r} ({', '.join(MTL_SHARING)})")
    eval_cfg = eval_cfg or EvalConfig()
    freeze_bn, freeze_at = backbone_freezing(cfg)
    backbone = TimmBackbone(
        cfg.backbone.name,
        out_strides=list(cfg.backbone.out_strides),
        pretrained=cfg.backbone.pretrained,
        weights=cfg.backbone.weights,
        freeze_bn=freeze_bn,
        freeze_at=freeze_at,
    )
    neck: PyramidNeck | CrossStitchNeck
    if sharing == "cross_stitch":
        neck = CrossStitchNeck(
            backbone.channels, backbone.strides, cfg.fpn_channels, tasks=list(cfg.tasks)
        )
    else:
        neck = PyramidNeck(backbone.channels, backbone.strides, cfg.fpn_channels, extra_levels=2)
    heads: dict[str, nn.Module] = {}
    # Detection reads P3 and coarser (FCOS); semantic segmentation the finest levels up to P5,
    # which includes P2 when the backbone is asked for stride 4.
    det_strides = [s for s in neck.strides if s >= 8]
    sem_strides = [s for s in neck.strides if s <= 32]
    if "det" in cfg.tasks:
        heads["det"] = FCOSHead(
            cfg.fpn_channels,
            classes.num_classes,
            det_strides,
            num_convs=cfg.det.num_convs,
            center_sampling_radius=cfg.det.center_sampling_radius,
            score_thresh=eval_cfg.score_thresh,
            nms_thresh=eval_cfg.nms_thresh,
            max_detections=eval_cfg.max_detections,
            pre_nms_topk=eval_cfg.pre_nms_topk,
        )
    if "sem" in cfg.tasks:
        check_sem_class_count(classes.sem_names)
        heads["sem"] = SemanticFPNHead(  # background + the semantic classes
            cfg.fpn_channels,
            len(classes.sem_names) + 1,
            sem_strides,
            cfg.sem.channels,
            background=classes.sem_background,
            dice_weight=cfg.sem.dice_weight,
        )
    if "inst" in cfg.tasks:
        heads["inst"] = MaskHead(
            cfg.fpn_channels,
            classes.num_classes,
            sem_strides,
            roi_size=cfg.inst.roi_size,
            channels=cfg.inst.channels,
            num_convs=cfg.inst.num_convs,
            class_agnostic=cfg.inst.class_agnostic,
            jitter_copies=cfg.inst.jitter_copies,
            jitter_min_iou=cfg.inst.jitter_min_iou,
        )
    head_strides = {"det": det_strides, "sem": sem_strides, "inst": sem_strides}
    adapters: dict[str, nn.Module] = {}
    if sharing == "adapters":
        adapters = {t: TaskAdapters(cfg.fpn_channels, len(head_strides[t])) for t in heads}
    return MultiTaskModel(backbone, neck, heads, head_strides, adapters, classes)
