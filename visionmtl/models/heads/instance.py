"""RoIAlign mask head for instance segmentation (Mask R-CNN: He et al. 2017)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align
from torchvision.ops.poolers import LevelMapper

from visionmtl.models.heads.common import conv_gn_relu
from visionmtl.models.paste import paste_masks
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
            boxes per image (bounds the cost of images with many instances).
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
    ) -> None:
        super().__init__()
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
        if len(features) < len(self.strides):
            raise ValueError(
                f"MaskHead reads {len(self.strides)} levels (strides {self.strides}) but got "
                f"{len(features)} feature maps"
            )
        features = features[: len(self.strides)]
        device = features[0].device
        # Boxes stay float32: half-precision coordinates are off by pixels on large images.
        rois = torch.cat(
            [
                torch.cat([box.new_full((box.shape[0], 1), float(i)), box], dim=1)
                for i, box in enumerate(boxes)
            ]
        ).to(device=device, dtype=torch.float32)
        if len(features) == 1:
            return self._align(features[0], rois, self.strides[0])
        levels = self.level_mapper([rois[:, 1:]])
        pooled, order = [], []
        for level, (feature, stride) in enumerate(zip(features, self.strides, strict=True)):
            index = torch.nonzero(levels == level).squeeze(1)
            pooled.append(self._align(feature, rois[index], stride))
            order.append(index)
        # Undo the grouping by level so that row r is still box r.
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]

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

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> dict[str, Tensor]:
        """features: pyramid maps [B, C, H/s, W/s] (ascending stride, first len(strides) used);
        boxes: per image [K_i, 4] xyxy in padded input pixels (ground truth in training, detections
        at inference).

        Returns ``mask_logits`` [sum K_i, num_classes or 1, 2 * roi_size, 2 * roi_size],
        ``num_boxes`` [B] int64 (K_i actually used) and ``roi_index`` [sum K_i] int64 (index of
        each row's box within its image's ``boxes``). In training mode at most ``max_gt_per_image``
        random boxes per image are kept; in eval mode all are, and ``roi_index`` is 0..K_i-1."""
        if len(boxes) != features[0].shape[0]:
            raise ValueError(
                f"MaskHead got boxes for {len(boxes)} images but features for {features[0].shape[0]}"
            )
        device = features[0].device
        kept, roi_index = [], []
        for box in boxes:
            index = torch.arange(box.shape[0], device=device)
            if self.training and box.shape[0] > self.max_gt_per_image:
                index = torch.randperm(box.shape[0], device=device)[: self.max_gt_per_image]
                index = index.sort().values
            kept.append(box.to(device)[index])
            roi_index.append(index)
        pooled = self.roi_features(features, kept)
        hidden = F.relu(self.upsample(self.convs(pooled)))
        return {
            "mask_logits": self.predictor(hidden),
            "num_boxes": torch.tensor([b.shape[0] for b in kept], device=device),
            "roi_index": torch.cat(roi_index),
        }

    def loss(
        self,
        outputs: dict[str, Tensor],
        targets: list[Target],
        boxes: list[Tensor],
        labels: list[Tensor],
    ) -> dict[str, Tensor]:
        """Per-pixel BCE of the ground-truth class's mask channel (``inst/mask``), mean over pixels
        and instances, in float32.

        ``boxes`` / ``labels`` are the per-image ground-truth boxes [N_i, 4] / labels [N_i] given
        to ``forward``; targets[i]["masks"] [N_i, Hp, Wp] uint8 are RoIAligned onto them. Images
        without ``masks`` are not labelled for this task and contribute nothing."""
        logits = outputs["mask_logits"].float()
        counts = [int(c) for c in outputs["num_boxes"]]
        if not (len(targets) == len(boxes) == len(labels) == len(counts)):
            raise ValueError(
                f"MaskHead.loss got {len(targets)} targets, {len(boxes)} box lists, "
                f"{len(labels)} label lists and outputs for {len(counts)} images"
            )
        roi_index = outputs.get("roi_index")
        if roi_index is None:
            roi_index = torch.cat([torch.arange(c, device=logits.device) for c in counts])
        picked_logits, mask_targets = [], []
        for i, (image_logits, image_index) in enumerate(
            zip(logits.split(counts), roi_index.split(counts), strict=True)
        ):
            if "masks" not in targets[i] or image_index.numel() == 0:
                continue
            masks = targets[i]["masks"]
            if masks.shape[0] != boxes[i].shape[0] or labels[i].shape[0] != boxes[i].shape[0]:
                raise ValueError(
                    f"MaskHead.loss: image {i} has {masks.shape[0]} masks, {labels[i].shape[0]} "
                    f"labels and {boxes[i].shape[0]} boxes; they must be the same instances"
                )
            image_index = image_index.to(masks.device)
            mask_targets.append(self.mask_targets(masks[image_index], boxes[i][image_index]))
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
    def mask_targets(self, masks: Tensor, boxes: Tensor) -> Tensor:
        """masks [N, H, W] (uint8/bool/float) and boxes [N, 4] xyxy in mask pixels -> binary float
        targets [N, 2 * roi_size, 2 * roi_size]: each mask RoIAligned onto its box, >= 0.5."""
        size = 2 * self.roi_size
        if masks.shape[0] == 0:
            return masks.new_zeros((0, size, size), dtype=torch.float32)
        rois = torch.cat(
            [
                torch.arange(masks.shape[0], device=masks.device, dtype=torch.float32)[:, None],
                boxes.to(device=masks.device, dtype=torch.float32),
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
        """Paste each detection's mask (channel of its label, sigmoid) into its box.

        ``detections[i]`` holds the ``boxes`` [K_i, 4] (in ``output_sizes[i]`` pixels when given,
        else in ``image_sizes[i]`` pixels) and ``labels`` [K_i] of the boxes given to ``forward``.
        Returns per image ``masks`` [K_i, h, w] bool at the output (or image) size."""
        logits = outputs["mask_logits"]
        counts = [int(c) for c in outputs["num_boxes"]]
        if len(detections) != len(counts):
            raise ValueError(
                f"MaskHead.postprocess got {len(detections)} detection lists for {len(counts)} images"
            )
        results = []
        for i, (image_logits, detection) in enumerate(
            zip(logits.split(counts), detections, strict=True)
        ):
            boxes, labels = detection["boxes"], detection["labels"]
            if boxes.shape[0] != image_logits.shape[0]:
                raise ValueError(
                    f"MaskHead.postprocess: image {i} has {boxes.shape[0]} detections but mask "
                    f"logits for {image_logits.shape[0]} boxes (forward must get the same boxes)"
                )
            channel = torch.zeros_like(labels) if self.class_agnostic else labels
            rows = torch.arange(image_logits.shape[0], device=image_logits.device)
            probs = image_logits[rows, channel.to(image_logits.device)].float().sigmoid()
            size = tuple(output_sizes[i]) if output_sizes is not None else tuple(image_sizes[i])
            masks = paste_masks(probs, boxes, (int(size[0]), int(size[1])), self.mask_threshold)
            results.append({"masks": masks})
        return results
