"""RoIAlign mask head for instance segmentation (Mask R-CNN: He et al. 2017)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image, roi_align
from torchvision.ops.poolers import LevelMapper

from visionmtl.models.heads.common import conv_gn_relu
from visionmtl.models.paste import paste_mask_crops, paste_masks
from visionmtl.structures import Target


class MaskHead(nn.Module):
    """Pool each box from its FPN level, run a small FCN and predict per-class mask logits.

    Args:
        in_channels: channels of the pyramid levels.
        num_classes: number of object categories (no background class).
        strides: strides of the levels read, consecutive powers of two, ascending (e.g. [4, 8, 16, 32]).
        roi_size: RoIAlign output size; the masks are predicted at 2 * roi_size.
        channels: width of the mask FCN.
        num_convs: 3x3 conv + GroupNorm + ReLU layers before the 2x transposed conv.
        class_agnostic: predict one mask channel instead of one per class.
        mask_threshold: probability threshold of the pasted masks in ``postprocess``.
        max_gt_per_image: in training mode, ``forward`` keeps a random subset of at most this many
            RoIs per image, jittered copies included (bounds the cost of images with many instances).
        jitter_copies: in training mode, RoIs per given box besides the box itself: jittered copies,
            so that the head also learns from the inexact boxes it gets from the detector at
            inference (as Mask R-CNN trains on proposals of IoU >= 0.5); 0: the exact boxes only.
        jitter_min_iou: each jittered copy overlaps its box with at least this IoU.
        jitter_scale: each side of a copy moves by up to this fraction of the box's width (x) or
            height (y).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: list[int],
        roi_size: int = 14,
        channels: int = 128,
        num_convs: int = 4,
        class_agnostic: bool = False,
        mask_threshold: float = 0.5,
        max_gt_per_image: int = 64,
        jitter_copies: int = 1,
        jitter_min_iou: float = 0.5,
        jitter_scale: float = 0.2,
    ) -> None:
        super().__init__()
        if jitter_copies < 0 or not 0 < jitter_min_iou <= 1 or jitter_scale < 0:
            raise ValueError(
                f"MaskHead: jitter_copies must be >= 0, jitter_min_iou in (0, 1] and jitter_scale "
                f">= 0; got {jitter_copies}, {jitter_min_iou} and {jitter_scale}"
            )
        levels = [math.log2(s) for s in strides]
        if not strides or any(
            not k.is_integer() or k != levels[0] + i for i, k in enumerate(levels)
        ):
            raise ValueError(
                f"MaskHead strides must be consecutive powers of two, ascending; got {list(strides)}"
            )
        self.num_classes = num_classes
        self.strides = list(strides)
        self.roi_size = roi_size
        self.class_agnostic = class_agnostic
        self.mask_threshold = mask_threshold
        self.max_gt_per_image = max_gt_per_image
        self.jitter_copies = jitter_copies
        self.jitter_min_iou = jitter_min_iou
        self.jitter_scale = jitter_scale
        # Canonical FPN assignment: a 224x224 box goes to stride 16, each 2x in size one level up.
        self.level_mapper = LevelMapper(int(levels[0]), int(levels[-1]))
        self.convs = nn.Sequential(
            *[conv_gn_relu(in_channels if i == 0 else channels, channels) for i in range(num_convs)]
        )
        conv_out = channels if num_convs > 0 else in_channels
        self.upsample = nn.ConvTranspose2d(conv_out, channels, 2, stride=2)
        self.predictor = nn.Conv2d(channels, 1 if class_agnostic else num_classes, 1)
        nn.init.kaiming_normal_(self.upsample.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.upsample.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def roi_features(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """features: maps [B, C, H/s, W/s] for ``strides``; boxes: per image [K_i, 4] xyxy in padded
        input pixels -> pooled [sum K_i, C, roi_size, roi_size] (image order, then box order)."""
        # Boxes stay float32: half-precision coordinates are off by pixels on large images.
        return self.pool_rois(features, boxes_to_rois(boxes).to(features[0].device))

    def pool_rois(self, features: list[Tensor], rois: Tensor) -> Tensor:
        """features: maps [B, C, H/s, W/s] for ``strides``; rois [R, 5] float32 (image index, x0,
        y0, x1, y1 in padded input pixels) -> pooled [R, C, roi_size, roi_size], each RoI from
        its FPN level."""
        if len(features) < len(self.strides):
            raise ValueError(
                f"MaskHead reads {len(self.strides)} levels (strides {self.strides}) but got "
                f"{len(features)} feature maps"
            )
        features = features[: len(self.strides)]
        if len(features) == 1:
            return self._align(features[0], rois, self.strides[0])
        levels = self.level_mapper([rois[:, 1:]])  # [R] int64
        if not self.training:  # each RoI pooled once, from its level: inference (and ONNX)
            parts, order = [], []
            for level, (feature, stride) in enumerate(zip(features, self.strides, strict=True)):
                index = torch.nonzero(levels == level).squeeze(1)
                parts.append(self._align(feature, rois[index], stride))
                order.append(index)
            # Undo the grouping by level so that row r is still box r.
            return torch.cat(parts)[torch.argsort(torch.cat(order))]
        # Training: every RoI pooled from every level, each keeping its own level's, so the step
        # has no data-dependent split (a GPU sync per level); a few times the small RoIAlign work
        # (15-20 % more mask-head time on the CPU), one level's maps at a time.
        pooled = self._align(features[0], rois, self.strides[0])
        for level in range(1, len(features)):
            at_level = (levels == level)[:, None, None, None]
            pooled = torch.where(
                at_level, self._align(features[level], rois, self.strides[level]), pooled
            )
        return pooled

    def mask_logits(self, features: list[Tensor], rois: Tensor) -> Tensor:
        """features as :meth:`pool_rois`; rois [R, 5] -> mask logits [R, num_classes or 1,
        2 * roi_size, 2 * roi_size]. The whole head at inference, as the ONNX export runs it."""
        pooled = self.pool_rois(features, rois)
        return self.predictor(F.relu(self.upsample(self.convs(pooled))))

    def _align(self, feature: Tensor, rois: Tensor, stride: int) -> Tensor:
        """RoIAlign in float32 (see ``roi_features``), returned in the feature's dtype."""
        with torch.autocast(device_type=feature.device.type, enabled=False):
            pooled = roi_align(
                feature.float(),
                rois,
                output_size=self.roi_size,
                spatial_scale=1.0 / stride,
                sampling_ratio=2,
                aligned=True,
            )
        return pooled.to(feature.dtype)

    def forward(
        self,
        features: list[Tensor],
        boxes: list[Tensor],
        image_sizes: list[tuple[int, int]] | None = None,
    ) -> dict[str, Tensor]:
        """features: pyramid maps [B, C, H/s, W/s] (ascending stride, first len(strides) used);
        boxes: per image [K_i, 4] xyxy in padded input pixels (ground truth in training, detections
        at inference); image_sizes: (h, w) the jittered RoIs are clipped to (default: the padded
        input size).

        Returns ``mask_logits`` [sum R_i, num_classes or 1, 2 * roi_size, 2 * roi_size],
        ``num_boxes`` [B] int64 on the CPU (R_i, the RoIs of image i), ``roi_boxes`` [sum R_i, 4] float32
        (the RoIs pooled) and ``roi_index`` [sum R_i] int64 (the index in ``boxes[i]`` of the box
        each RoI is, or is a jittered copy of). In eval mode the RoIs are the boxes themselves and
        ``roi_index`` is 0..K_i-1; in training mode they are the boxes and ``jitter_copies``
        jittered copies of each, of which at most ``max_gt_per_image`` random ones are kept."""
        if len(boxes) != features[0].shape[0]:
            raise ValueError(
                f"MaskHead got boxes for {len(boxes)} images but features for {features[0].shape[0]}"
            )
        device = features[0].device
        if image_sizes is None:
            padded = (
                features[0].shape[-2] * self.strides[0],
                features[0].shape[-1] * self.strides[0],
            )
            image_sizes = [padded] * len(boxes)
        rois, roi_index = [], []
        for box, image_size in zip(boxes, image_sizes, strict=True):
            box = box.to(device=device, dtype=torch.float32)
            if self.training:
                image_rois, index = self._training_rois(box, image_size)
            else:
                image_rois, index = box, torch.arange(box.shape[0], device=device)
            rois.append(image_rois)
            roi_index.append(index)
        return {
            "mask_logits": self.mask_logits(features, boxes_to_rois(rois).to(device)),
            # On the host: the sizes are known there, and reading them never waits for a GPU.
            "num_boxes": torch.tensor([r.shape[0] for r in rois]),
            "roi_boxes": torch.cat(rois),
            "roi_index": torch.cat(roi_index),
        }

    def _training_rois(self, boxes: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """One image's boxes [K, 4] -> training RoIs [R, 4] (the boxes, then ``jitter_copies``
        jittered copies of each; a random subset of ``max_gt_per_image`` where more) and the index
        [R] of each RoI's box. With ``jitter_copies`` 0 the RoIs are a subset of the boxes."""
        index = torch.arange(boxes.shape[0], device=boxes.device)
        rois = boxes
        if self.jitter_copies > 0 and boxes.shape[0] > 0:
            copies = jitter_boxes(
                boxes.repeat(self.jitter_copies, 1),
                image_size,
                self.jitter_scale,
                self.jitter_min_iou,
            )
            rois = torch.cat([boxes, copies])
            index = index.repeat(1 + self.jitter_copies)
        if rois.shape[0] > self.max_gt_per_image:
            keep = torch.randperm(rois.shape[0], device=boxes.device)[: self.max_gt_per_image]
            keep = keep.sort().values
            rois, index = rois[keep], index[keep]
        return rois, index

    def loss(
        self,
        outputs: dict[str, Tensor],
        targets: list[Target],
        boxes: list[Tensor],
        labels: list[Tensor],
    ) -> dict[str, Tensor]:
        """Per-pixel BCE of the ground-truth class's mask channel (``inst/mask``), mean over pixels
        and RoIs, in float32.

        ``boxes`` / ``labels`` are the per-image ground-truth boxes [N_i, 4] / labels [N_i] given
        to ``forward``; each RoI's target is its instance's mask (targets[i]["mask_crops"] over
        their ``mask_regions``, or ``masks`` [N_i, Hp, Wp] uint8) RoIAligned onto the RoI
        (``outputs["roi_boxes"]``: the box itself or a jittered copy). Images without mask keys
        (:func:`~visionmtl.structures.labels_instances`) are not labelled for this task and
        contribute nothing."""
        logits = outputs["mask_logits"].float()
        counts = outputs["num_boxes"].tolist()
        if not (len(targets) == len(boxes) == len(labels) == len(counts)):
            raise ValueError(
                f"MaskHead.loss got {len(targets)} targets, {len(boxes)} box lists, "
                f"{len(labels)} label lists and outputs for {len(counts)} images"
            )
        roi_index = outputs.get("roi_index")
        if roi_index is None:
            roi_index = torch.cat([torch.arange(c, device=logits.device) for c in counts])
        roi_boxes = outputs.get("roi_boxes")
        if roi_boxes is None:  # outputs without RoIs: the RoIs are the indexed boxes themselves
            roi_boxes = torch.cat(
                [
                    box.to(roi_index.device)[index]
                    for box, index in zip(boxes, roi_index.split(counts), strict=True)
                ]
            )
        picked_logits, mask_targets = [], []
        for i, (image_logits, image_index, image_rois) in enumerate(
            zip(logits.split(counts), roi_index.split(counts), roi_boxes.split(counts), strict=True)
        ):
            instance = instance_masks(targets[i])
            if instance is None or image_index.numel() == 0:
                continue
            masks, regions = instance
            if masks.shape[0] != boxes[i].shape[0] or labels[i].shape[0] != boxes[i].shape[0]:
                raise ValueError(
                    f"MaskHead.loss: image {i} has {masks.shape[0]} masks, {labels[i].shape[0]} "
                    f"labels and {boxes[i].shape[0]} boxes; they must be the same instances"
                )
            image_index = image_index.to(masks.device)
            regions = None if regions is None else regions[image_index.to(regions.device)]
            mask_targets.append(self.mask_targets(masks[image_index], image_rois, regions))
            channel = (
                torch.zeros_like(image_index)
                if self.class_agnostic
                else labels[i].to(masks.device)[image_index]
            )
            rows = torch.arange(image_logits.shape[0], device=logits.device)
            picked_logits.append(image_logits[rows, channel.to(logits.device)])
        if not picked_logits:
            return {"inst/mask": logits.sum() * 0}
        target = torch.cat(mask_targets).to(logits.device)
        loss = F.binary_cross_entropy_with_logits(torch.cat(picked_logits), target)
        return {"inst/mask": loss}

    @torch.no_grad()
    def mask_targets(self, masks: Tensor, boxes: Tensor, regions: Tensor | None = None) -> Tensor:
        """masks [N, Hm, Wm] (uint8/bool/float), each covering ``regions`` [N, 4] xyxy image pixels
        (default: the whole mask, ``(0, 0, Wm, Hm)``), and boxes [N, 4] xyxy image pixels ->
        binary float targets [N, 2 * roi_size, 2 * roi_size]: each mask RoIAligned onto its box,
        >= 0.5. Outside its region a mask reads 0."""
        size = 2 * self.roi_size
        if masks.shape[0] == 0:
            return masks.new_zeros((0, size, size), dtype=torch.float32)
        boxes = boxes.to(device=masks.device, dtype=torch.float32)
        height, width = masks.shape[-2:]
        if regions is not None:  # box coordinates -> cells of each mask's grid
            regions = regions.to(device=masks.device, dtype=torch.float32)
            origin = regions[:, :2].repeat(1, 2)
            cells = torch.tensor([width, height], dtype=torch.float32, device=masks.device)
            boxes = (boxes - origin) * (cells / (regions[:, 2:] - regions[:, :2])).repeat(1, 2)
        rois = torch.cat(
            [
                torch.arange(masks.shape[0], device=masks.device, dtype=torch.float32)[:, None],
                boxes,
            ],
            dim=1,
        )
        with torch.autocast(device_type=masks.device.type, enabled=False):
            resampled = roi_align(
                masks[:, None].float(),
                rois,
                output_size=size,
                spatial_scale=1.0,
                sampling_ratio=0,
                aligned=True,
            )
        return (resampled[:, 0] >= 0.5).float()

    @torch.no_grad()
    def postprocess(
        self,
        outputs: dict[str, Tensor],
        detections: list[dict[str, Tensor]],
        image_sizes: list[tuple[int, int]],
        output_sizes: list[tuple[int, int]] | None = None,
    ) -> list[dict[str, Tensor]]:
        """:func:`paste_instance_masks` of ``mask_logits`` with this head's settings."""
        counts = outputs["num_boxes"].tolist()
        return paste_instance_masks(
            outputs["mask_logits"],
            counts,
            detections,
            image_sizes,
            output_sizes,
            self.class_agnostic,
            self.mask_threshold,
        )


def instance_masks(target: Target) -> tuple[Tensor, Tensor | None] | None:
    """A target's instance masks and the regions [N, 4] they cover: the training loader's
    ``mask_crops`` [N, S, S] with ``mask_regions``, or full-image ``masks`` [N, H, W] (regions None:
    the whole image); None when the target does not label instances."""
    if "mask_crops" in target:
        return target["mask_crops"], target["mask_regions"]
    if "masks" in target:
        return target["masks"], None
    return None


def boxes_to_rois(boxes: list[Tensor]) -> Tensor:
    """Per image boxes [K_i, 4] xyxy -> RoIs [sum K_i, 5] float32 (image index, x0, y0, x1, y1)."""
    return torch.cat(
        [
            torch.cat([box.new_full((box.shape[0], 1), float(i)), box], dim=1)
            for i, box in enumerate(boxes)
        ]
    ).to(torch.float32)


@torch.no_grad()
def paste_instance_masks(
    mask_logits: Tensor,
    counts: list[int],
    detections: list[dict[str, Tensor]],
    image_sizes: list[tuple[int, int]],
    output_sizes: list[tuple[int, int]] | None,
    class_agnostic: bool,
    mask_threshold: float,
    crops: bool = False,
) -> list[dict[str, Any]]:
    """Paste each detection's mask (channel of its label, sigmoid) into its box.

    ``mask_logits`` [sum K_i, C, M, M] for the boxes of each image in turn, ``counts[i]`` = K_i.
    ``detections[i]`` holds the ``boxes`` [K_i, 4] (in ``output_sizes[i]`` pixels when given,
    else in ``image_sizes[i]`` pixels) and ``labels`` [K_i] of the boxes the logits are for.
    Returns per image ``masks`` [K_i, h, w] bool at the output (or image) size; with ``crops``
    instead ``mask_crops`` (K_i bool crops) and ``mask_regions`` [K_i, 4] (:func:`paste_mask_crops`)."""
    if len(detections) != len(counts):
        raise ValueError(
            f"paste_instance_masks got {len(detections)} detection lists for {len(counts)} images"
        )
    results = []
    for i, (image_logits, detection) in enumerate(
        zip(mask_logits.split(counts), detections, strict=True)
    ):
        boxes, labels = detection["boxes"], detection["labels"]
        if boxes.shape[0] != image_logits.shape[0]:
            raise ValueError(
                f"paste_instance_masks: image {i} has {boxes.shape[0]} detections but mask "
                f"logits for {image_logits.shape[0]} boxes (the mask head must get the same boxes)"
            )
        channel = torch.zeros_like(labels) if class_agnostic else labels
        rows = torch.arange(image_logits.shape[0], device=image_logits.device)
        probs = image_logits[rows, channel.to(image_logits.device)].float().sigmoid()
        size = tuple(output_sizes[i]) if output_sizes is not None else tuple(image_sizes[i])
        size = (int(size[0]), int(size[1]))
        if crops:
            mask_crops, regions = paste_mask_crops(probs, boxes, size, mask_threshold)
            results.append({"mask_crops": mask_crops, "mask_regions": regions})
        else:
            results.append({"masks": paste_masks(probs, boxes, size, mask_threshold)})
    return results


@torch.no_grad()
def jitter_boxes(
    boxes: Tensor,
    image_size: tuple[int, int],
    scale: float,
    min_iou: float,
    tries: int = 8,
) -> Tensor:
    """boxes [N, 4] xyxy -> a jittered copy of each [N, 4]: every side moved by up to ``scale``
    times the box's width (x) or height (y), clipped to ``image_size`` (h, w), of IoU >= ``min_iou``
    with its box.

    Each box draws ``tries`` candidates at once from the torch RNG of its device (a fixed amount,
    so seeded runs replay) and keeps the first that qualifies, or the box itself if none does."""
    sizes = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # [N, 4]: w, h, w, h
    shifts = torch.rand((tries, *boxes.shape), device=boxes.device) * 2 - 1
    candidates = clip_boxes_to_image(boxes + shifts * scale * sizes, image_size)  # [T, N, 4]
    qualifies = paired_iou(candidates, boxes.expand_as(candidates)) >= min_iou  # [T, N]
    first = qualifies.int().argmax(dim=0)  # the first qualifying try (0 where none does)
    chosen = candidates[first, torch.arange(boxes.shape[0], device=boxes.device)]
    return torch.where(qualifies.any(dim=0)[:, None], chosen, boxes)


def paired_iou(boxes: Tensor, others: Tensor) -> Tensor:
    """IoU of each box [..., 4] with the box at the same position of ``others`` [..., 4] -> [...]
    (torchvision's box_iou compares all pairs)."""
    corner_low = torch.maximum(boxes[..., :2], others[..., :2])
    corner_high = torch.minimum(boxes[..., 2:], others[..., 2:])
    inter = (corner_high - corner_low).clamp(min=0).prod(dim=-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(dim=-1)
    other_area = (others[..., 2:] - others[..., :2]).clamp(min=0).prod(dim=-1)
    return inter / (area + other_area - inter)
