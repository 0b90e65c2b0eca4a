"""Anchor-free dense detection head (FCOS: Tian et al. 2019, with centre sampling and GIoU)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import (
    batched_nms,
    clip_boxes_to_image,
    sigmoid_focal_loss,
)

from visionmtl.models.heads.common import conv_gn_relu, mean_over_ranks
from visionmtl.structures import Prediction, Target


class FCOSHead(nn.Module):
    """FCOS head shared over pyramid levels.

    Args:
        in_channels: channels of every pyramid level.
        num_classes: number of object categories (no background class).
        strides: stride of each pyramid level it is applied to, ascending.
        num_convs: conv layers in the classification and regression towers.
        center_sampling_radius: positives are points within radius * stride of a box centre; 0: no
            centre sampling, every point inside the box (as the FCOS reference).
        score_thresh, nms_thresh, max_detections: inference settings.
        pre_nms_topk: candidates (point, class) kept per pyramid level before NMS.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: list[int],
        num_convs: int = 2,
        center_sampling_radius: float = 1.5,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        max_detections: int = 100,
        pre_nms_topk: int = 1000,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = list(strides)
        self.center_sampling_radius = center_sampling_radius
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.max_detections = max_detections
        self.pre_nms_topk = pre_nms_topk
        self.cls_tower = nn.Sequential(
            *[conv_gn_relu(in_channels, in_channels) for _ in range(num_convs)]
        )
        self.reg_tower = nn.Sequential(
            *[conv_gn_relu(in_channels, in_channels) for _ in range(num_convs)]
        )
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.box_reg = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(strides)))
        # Every conv N(0, 0.01) with zero bias, towers included, as torchvision's FCOS heads and
        # the FCOS reference (PyTorch's default would depend on the width: std 0.024 at 64 channels).
        predictors = (self.cls_logits, self.box_reg, self.centerness)
        for layer in (*self.cls_tower.modules(), *self.reg_tower.modules(), *predictors):
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:  # the tower convs have none: GroupNorm follows
                    nn.init.zeros_(layer.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - 0.01) / 0.01))
        # Object size range each level is responsible for (FCOS: P3 [0, 64], P4 [64, 128], ...,
        # P7 [512, inf] for strides 8..128, i.e. boundaries at 8x the finer levels' strides).
        bounds = [0.0] + [8.0 * s for s in self.strides[:-1]] + [float("inf")]
        self.size_ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
        self._grids: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        """features: pyramid maps [B, C, H_l, W_l] -> flattened over all levels' points P:
        ``cls_logits`` [B, P, K], ``box_ltrb`` [B, P, 4] distances in pixels, ``ctr_logits`` [B, P],
        ``points`` [P, 2] (x, y), ``point_strides`` [P], ``point_ranges`` [P, 2]."""
        cls_all, box_all, ctr_all, points, strides, ranges = [], [], [], [], [], []
        for level, feature in enumerate(features[: len(self.strides)]):
            cls_feat = self.cls_tower(feature)
            reg_feat = self.reg_tower(feature)
            batch, _, height, width = feature.shape
            cls_all.append(self.cls_logits(cls_feat).flatten(2).transpose(1, 2))
            box_all.append(self._box_distances(reg_feat, level).flatten(2).transpose(1, 2))
            ctr_all.append(self.centerness(reg_feat).flatten(1))
            level_points, level_strides, level_ranges = self._level_grid(
                level, height, width, feature.device
            )
            points.append(level_points)
            strides.append(level_strides)
            ranges.append(level_ranges)
        return {
            "cls_logits": torch.cat(cls_all, 1),
            "box_ltrb": torch.cat(box_all, 1),
            "ctr_logits": torch.cat(ctr_all, 1),
            "points": torch.cat(points),
            "point_strides": torch.cat(strides),
            "point_ranges": torch.cat(ranges),
        }

    def _level_grid(
        self, level: int, height: int, width: int, device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Point centres [H*W, 2] (x, y), strides [H*W] and size ranges [H*W, 2] of ``level`` at
        an H x W map; cached per shape and device (feature sizes repeat from step to step)."""
        key = (level, height, width, str(device))
        # Not from the cache while tracing for ONNX export: a cached grid would enter the graph
        # as a constant of the example's size, and the graph must follow the input size.
        grid = None if torch.jit.is_tracing() else self._grids.get(key)
        if grid is None:
            stride = self.strides[level]
            ys, xs = torch.meshgrid(
                torch.arange(height, device=device, dtype=torch.float32),
                torch.arange(width, device=device, dtype=torch.float32),
                indexing="ij",
            )
            points = torch.stack([xs.flatten(), ys.flatten()], dim=1) * stride + stride // 2
            strides = torch.full((height * width,), float(stride), device=device)
            low, high = self.size_ranges[level]
            ranges = torch.tensor([low, high], device=device).expand(height * width, 2)
            grid = (points, strides, ranges)
            if not torch.jit.is_tracing():
                if len(self._grids) >= 256:  # many image sizes (inference on arbitrary photos)
                    self._grids.clear()
                self._grids[key] = grid
        return grid

    def _box_distances(self, reg_feat: Tensor, level: int) -> Tensor:
        """Regression-tower features [B, C, H, W] of ``level`` -> l, t, r, b distances in pixels
        [B, 4, H, W], float32 whatever the autocast dtype."""
        # float32 from the conv on (MMDetection casts after its scale, against fp16 overflow of its
        # exp): bf16 keeps 8 significant bits, so 256-512 px distances would come in 2 px steps.
        with torch.autocast(device_type=reg_feat.device.type, enabled=False):
            distances = self.box_reg(reg_feat.float()) * self.scales[level]
            return F.relu(distances) * self.strides[level]

    @torch.no_grad()
    def assign(
        self, outputs: dict[str, Tensor], boxes: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Match points to one image's boxes [M, 4] / labels [M].

        Returns class targets [P, K] (one-hot, 0 rows for background), positive mask [P] and
        regression targets [P, 4] (l, t, r, b distances)."""
        points, strides, ranges = (
            outputs["points"],
            outputs["point_strides"],
            outputs["point_ranges"],
        )
        num_points = points.shape[0]
        cls_target = torch.zeros(num_points, self.num_classes, device=points.device)
        if boxes.numel() == 0:
            return (
                cls_target,
                torch.zeros(num_points, dtype=torch.bool, device=points.device),
                points.new_zeros(num_points, 4),
            )
        xs, ys = points[:, 0:1], points[:, 1:2]  # [P, 1]
        ltrb = torch.stack(
            [xs - boxes[:, 0], ys - boxes[:, 1], boxes[:, 2] - xs, boxes[:, 3] - ys], dim=2
        )
        candidate = ltrb.min(dim=2).values > 0  # [P, M] inside the box
        # Radius 0 switches centre sampling off (FCOS reference), rather than leaving no positives.
        if self.center_sampling_radius > 0:
            candidate &= self._inside_centre(points, strides, boxes)
        max_dist = ltrb.max(dim=2).values
        candidate &= (max_dist >= ranges[:, 0:1]) & (max_dist <= ranges[:, 1:2])
        areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(
            num_points, -1
        )
        areas = torch.where(candidate, areas, torch.full_like(areas, float("inf")))
        min_area, matched = areas.min(dim=1)
        positive = torch.isfinite(min_area)
        # A scatter, not boolean-mask indexing: no host wait for the number of positives.
        cls_target.scatter_(1, labels[matched][:, None], positive[:, None].to(cls_target.dtype))
        reg_target = ltrb[torch.arange(num_points, device=points.device), matched]
        return cls_target, positive, reg_target

    def _inside_centre(self, points: Tensor, strides: Tensor, boxes: Tensor) -> Tensor:
        """points [P, 2], their strides [P], boxes [M, 4] -> [P, M]: the point lies within
        ``center_sampling_radius`` * stride of the box centre (and inside the box)."""
        xs, ys = points[:, 0:1], points[:, 1:2]
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        radius = strides[:, None] * self.center_sampling_radius  # [P, 1]
        x0 = torch.maximum(centers[:, 0] - radius, boxes[:, 0])
        y0 = torch.maximum(centers[:, 1] - radius, boxes[:, 1])
        x1 = torch.minimum(centers[:, 0] + radius, boxes[:, 2])
        y1 = torch.minimum(centers[:, 1] + radius, boxes[:, 3])
        return (xs > x0) & (xs < x1) & (ys > y0) & (ys < y1)

    def loss(
        self,
        outputs: dict[str, Tensor],
        targets: list[Target],
        padded_shape: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Focal loss (``det/cls``), centerness-weighted GIoU (``det/box``) and centerness BCE (``det/ctr``).

        Only images whose target has ``boxes`` count; the others are not labelled for detection.
        Under torch.distributed the normalisers (number of positives, sum of the centerness targets)
        are means over the ranks, so every rank must call ``loss``, labelled images or not."""
        labelled = [i for i, t in enumerate(targets) if "boxes" in t]
        index = torch.as_tensor(labelled, dtype=torch.int64, device=outputs["cls_logits"].device)
        # Unlabelled images are left out by the selection; with none left the losses are 0 and
        # still in the graph (every parameter gets a gradient, as DDP expects).
        cls_logits = outputs["cls_logits"].float()[index]  # [B', P, K]
        box_ltrb = outputs["box_ltrb"].float()[index]
        ctr_logits = outputs["ctr_logits"].float()[index]
        cls_target, positive, reg_target = self._targets(outputs, [targets[i] for i in labelled])
        # Box and centerness losses over every point, weighted by the positive mask: the same
        # sums as selecting the positives, without boolean indexing (a host-device sync each).
        weight = positive.float()  # [B', P]
        # Negatives get a dummy box on both sides, so nothing there (not even a non-finite
        # prediction) reaches the sums or the gradients.
        ones = torch.ones_like(reg_target)
        safe_target = torch.where(positive[..., None], reg_target, ones)
        safe_pred = torch.where(positive[..., None], box_ltrb, ones)
        ctr_target = torch.where(positive, centerness(safe_target), 0.0)
        # No branch on this rank's positives before the reductions: all ranks must reach them.
        num_pos = mean_over_ranks(weight.sum()).clamp(min=1.0)
        ctr_sum = mean_over_ranks(ctr_target.sum()).clamp(min=1e-6)
        loss_cls = sigmoid_focal_loss(cls_logits, cls_target, reduction="sum") / num_pos
        loss_box = (ltrb_giou_loss(safe_pred, safe_target) * ctr_target).sum() / ctr_sum
        ctr_bce = F.binary_cross_entropy_with_logits(ctr_logits, ctr_target, reduction="none")
        loss_ctr = torch.where(positive, ctr_bce, 0.0).sum() / num_pos
        return {"det/cls": loss_cls, "det/box": loss_box, "det/ctr": loss_ctr}

    def _targets(
        self, outputs: dict[str, Tensor], targets: list[Target]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`assign` for each of the (labelled) ``targets``, stacked: class targets
        [B', P, K], positive mask [B', P], regression targets [B', P, 4]; B' may be 0."""
        if not targets:
            num_points, device = outputs["points"].shape[0], outputs["points"].device
            return (
                torch.zeros(0, num_points, self.num_classes, device=device),
                torch.zeros(0, num_points, dtype=torch.bool, device=device),
                torch.zeros(0, num_points, 4, device=device),
            )
        assigned = [self.assign(outputs, t["boxes"], t["labels"]) for t in targets]
        cls_target, positive, reg_target = zip(*assigned, strict=True)
        return torch.stack(cls_target), torch.stack(positive), torch.stack(reg_target)

    @torch.no_grad()
    def postprocess(
        self,
        outputs: dict[str, Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[Prediction]:
        """:func:`decode_detections` with this head's inference settings."""
        return decode_detections(
            outputs,
            image_sizes,
            self.num_classes,
            self.score_thresh,
            self.nms_thresh,
            self.max_detections,
            self.pre_nms_topk,
        )


@torch.no_grad()
def decode_detections(
    outputs: dict[str, Tensor],
    image_sizes: list[tuple[int, int]],
    num_classes: int,
    score_thresh: float,
    nms_thresh: float,
    max_detections: int,
    pre_nms_topk: int,
) -> list[Prediction]:
    """Decode, threshold and NMS per image.

    ``outputs`` as :meth:`FCOSHead.forward` returns them (``cls_logits`` [B, P, K], ``box_ltrb``
    [B, P, 4], ``ctr_logits`` [B, P], ``points`` [P, 2], ``point_strides`` [P]). Boxes are in input
    pixels, clipped to ``image_sizes`` (h, w) (see :func:`scale_boxes`). Returns per image
    ``boxes`` [K, 4], ``scores`` [K] (descending), ``labels`` [K]."""
    results = []
    points = outputs["points"]
    # Levels are the consecutive runs of one stride in the flattened points.
    _, counts = torch.unique_consecutive(outputs["point_strides"], return_counts=True)
    level_sizes = counts.tolist()
    for i, (height, width) in enumerate(image_sizes):
        scores = torch.sqrt(
            outputs["cls_logits"][i].float().sigmoid()
            * outputs["ctr_logits"][i].float().sigmoid()[:, None]
        ).flatten()
        keep = _candidates(scores, level_sizes, num_classes, score_thresh, pre_nms_topk)
        point_index, labels = keep // num_classes, keep % num_classes
        ltrb = outputs["box_ltrb"][i, point_index].float()
        centres = points[point_index]
        boxes = torch.cat([centres - ltrb[:, :2], centres + ltrb[:, 2:]], dim=1)
        boxes = clip_boxes_to_image(boxes, (height, width))
        scores = scores[keep]
        # Strictly wider than 1e-3 px (remove_small_boxes would keep a side equal to it).
        valid = ((boxes[:, 2] - boxes[:, 0]) > 1e-3) & ((boxes[:, 3] - boxes[:, 1]) > 1e-3)
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        kept = batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]
        boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
        results.append({"boxes": boxes, "scores": scores, "labels": labels})
    return results


def _candidates(
    scores: Tensor, level_sizes: list[int], num_classes: int, score_thresh: float, topk: int
) -> Tensor:
    """scores [P * K] (point-major, levels in order, ``level_sizes`` points each) -> flat indices
    of the scores above ``score_thresh``, at most ``topk`` per level."""
    # Per level as torchvision, the FCOS reference and MMDetection: with one global top-k, many
    # near-duplicates of one object on one level could evict every candidate of another.
    keep, start = [], 0
    for level_scores in scores.split([size * num_classes for size in level_sizes]):
        index = torch.nonzero(level_scores > score_thresh).squeeze(1)
        if index.numel() > topk:
            index = index[level_scores[index].topk(topk).indices]
        keep.append(index + start)
        start += level_scores.numel()
    return torch.cat(keep)


def centerness(ltrb: Tensor) -> Tensor:
    """Regression targets [..., 4] (l, t, r, b > 0) -> FCOS centerness targets [...] in (0, 1]."""
    left_right, top_bottom = ltrb[..., [0, 2]], ltrb[..., [1, 3]]
    return torch.sqrt(
        (left_right.min(-1).values / left_right.max(-1).values)
        * (top_bottom.min(-1).values / top_bottom.max(-1).values)
    )


def ltrb_giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - GIoU of two boxes around the same point, each given as distances [..., 4] (l, t, r,
    b >= 0) from it -> [...]. The same values as torchvision's ``generalized_box_iou_loss`` on
    the boxes (-l, -t, r, b), in closed form: no boolean masks (FCOS's IOULoss does the same)."""
    inter = (
        torch.minimum(pred[..., 0], target[..., 0]) + torch.minimum(pred[..., 2], target[..., 2])
    ) * (torch.minimum(pred[..., 1], target[..., 1]) + torch.minimum(pred[..., 3], target[..., 3]))
    enclosing = (
        torch.maximum(pred[..., 0], target[..., 0]) + torch.maximum(pred[..., 2], target[..., 2])
    ) * (torch.maximum(pred[..., 1], target[..., 1]) + torch.maximum(pred[..., 3], target[..., 3]))
    area = (pred[..., 0] + pred[..., 2]) * (pred[..., 1] + pred[..., 3])
    target_area = (target[..., 0] + target[..., 2]) * (target[..., 1] + target[..., 3])
    union = area + target_area - inter
    eps = 1e-7  # torchvision's
    iou = inter / (union + eps)
    return 1 - iou + (enclosing - union) / (enclosing + eps)


def scale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Boxes [K, 4] xyxy in an image of ``from_size`` (h, w) -> the same boxes at ``to_size``."""
    (from_h, from_w), (to_h, to_w) = from_size, to_size
    return boxes * boxes.new_tensor([to_w / from_w, to_h / from_h, to_w / from_w, to_h / from_h])
