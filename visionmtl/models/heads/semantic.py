"""Semantic segmentation head over the finest pyramid levels (Panoptic FPN, Kirillov et al. 2019)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from visionmtl.models.heads.common import conv_gn_relu
from visionmtl.structures import IGNORE_INDEX


class SemanticFPNHead(nn.Module):
    """Upsample each level to the finest stride with conv+2x steps, sum, and classify per pixel.

    Args:
        in_channels: channels of the pyramid levels.
        num_classes: classes including background (index 0).
        strides: strides of the levels used (e.g. [8, 16, 32]); the first is the output stride.
        channels: width of the head.
        background: whether index 0 is predicted; without it (no training source labels
            background, e.g. CamVid) the argmax is over classes 1.. only.
        dice_weight: weight of the soft Dice loss beside the cross-entropy (0: none).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: list[int],
        channels: int = 64,
        background: bool = True,
        dice_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.strides = list(strides)
        self.num_classes = num_classes
        self.first_class = 0 if background else 1
        self.scale_heads = nn.ModuleList()
        for stride in self.strides:
            num_up = int(math.log2(stride // self.strides[0]))
            layers: list[nn.Module] = [conv_gn_relu(in_channels, channels)]
            for k in range(num_up):
                if k > 0:
                    layers.append(conv_gn_relu(channels, channels))
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.predictor = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        """features: pyramid maps (ascending stride) -> ``sem_logits`` [B, C, H/s0, W/s0]."""
        fused = self.scale_heads[0](features[0])
        for head, feature in zip(
            self.scale_heads[1:], features[1 : len(self.strides)], strict=True
        ):
            fused = fused + head(feature)
        return {"sem_logits": self.predictor(fused)}

    def loss(
        self,
        outputs: dict[str, Tensor],
        targets: list[dict[str, Tensor]],
        padded_shape: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Pixel cross-entropy (``sem/ce``), and with ``dice_weight`` the soft Dice loss
        (``sem/dice``), at the padded input resolution over images with ``sem_seg``
        (:func:`banded_pixel_losses`: the full-resolution logits are never held at once)."""
        logits = outputs["sem_logits"]
        labelled = [i for i, t in enumerate(targets) if "sem_seg" in t]
        if not labelled:
            return self._zero(logits)
        # int64 for cross-entropy; a compact training loader delivers uint8
        target = torch.stack(
            [_pad_to(targets[i]["sem_seg"], padded_shape) for i in labelled]
        ).long()
        if (target != IGNORE_INDEX).sum() == 0:
            return self._zero(logits)
        ce, dice = banded_pixel_losses(logits[labelled].float(), target, self.dice_weight > 0)
        losses = {"sem/ce": ce}
        if self.dice_weight > 0:
            losses["sem/dice"] = self.dice_weight * dice
        return losses

    def _zero(self, logits: Tensor) -> dict[str, Tensor]:
        """The loss keys at zero, still connected to the graph (every rank's graph the same)."""
        zero = logits.sum() * 0
        return {"sem/ce": zero, **({"sem/dice": zero} if self.dice_weight > 0 else {})}

    @torch.no_grad()
    def postprocess(
        self,
        outputs: dict[str, Tensor],
        image_sizes: list[tuple[int, int]],
        output_sizes: list[tuple[int, int]] | None = None,
    ) -> list[dict[str, Tensor]]:
        """:func:`semantic_labels` of ``sem_logits`` at this head's output stride."""
        return semantic_labels(
            outputs["sem_logits"], self.strides[0], self.first_class, image_sizes, output_sizes
        )


@torch.no_grad()
def semantic_labels(
    sem_logits: Tensor,
    stride: int,
    first_class: int,
    image_sizes: list[tuple[int, int]],
    output_sizes: list[tuple[int, int]] | None = None,
) -> list[dict[str, Tensor]]:
    """sem_logits [B, C, H/stride, W/stride] -> per image ``sem_seg`` [h, w] int64 class map
    (argmax over classes ``first_class``..), cropped to ``image_sizes`` and, when
    ``output_sizes`` are given, resized to them.

    The argmax is taken at the input resolution and the label map is resized (nearest), so
    the cost at the output size is one label per pixel, not C logits: a 12-megapixel photo
    with 80 classes would need 3.8 GB of float32 logits."""
    logits = sem_logits.float()
    padded = (logits.shape[-2] * stride, logits.shape[-1] * stride)
    results = []
    for i, (height, width) in enumerate(image_sizes):
        image_logits = F.interpolate(
            logits[i : i + 1], size=padded, mode="bilinear", align_corners=False
        )
        labels = image_logits[0, first_class:, :height, :width].argmax(0) + first_class
        if output_sizes is not None and tuple(output_sizes[i]) != (height, width):
            labels = resize_labels(labels, tuple(output_sizes[i]))
        results.append({"sem_seg": labels})
    return results


# The most bytes of upsampled float32 logits the semantic loss holds at once (one band of rows).
# Without bands, 80 classes at a padded 1344x1024 take 0.45 GB per image for the logits, as much
# again for the log-softmax saved for backward, and twice that in the backward pass.
LOSS_BAND_BYTES = 32 * 2**20


def banded_pixel_losses(logits: Tensor, target: Tensor, dice: bool) -> tuple[Tensor, Tensor]:
    """(mean pixel cross-entropy, soft Dice loss or 0) of ``logits`` [B, C, h, w] upsampled
    bilinearly to ``target`` [B, H, W] (int64, ``IGNORE_INDEX`` where unlabelled).

    The same numbers as upsampling everything and calling ``F.cross_entropy`` /
    :func:`soft_dice_loss`, up to float summation order, but computed in bands of output rows
    under activation checkpointing: each band is upsampled from the few logit rows it needs,
    reduced to sums and dropped, and recomputed in the backward pass. Peak memory is one band
    (``LOSS_BAND_BYTES``) instead of ~4 x B x C x H x W floats."""
    (batch, classes, height, width), (out_h, out_w) = logits.shape, target.shape[-2:]
    scale = out_h // height
    if scale * height != out_h or scale * width != out_w:  # not an integer stride: one band
        return _full_losses(logits, target, dice)
    band = max(scale, LOSS_BAND_BYTES // (4 * batch * classes * out_w) // scale * scale)
    totals = sum(
        checkpoint(_band_sums, logits, target[:, y0 : y0 + band], y0, scale, use_reentrant=False)
        for y0 in range(0, out_h, band)
    )
    ce = totals[0] / (target != IGNORE_INDEX).sum().clamp(min=1)
    return ce, _dice_from_sums(*totals[1:].view(3, classes)) if dice else ce.new_zeros(())


def _band_sums(logits: Tensor, target: Tensor, y0: int, scale: int) -> Tensor:
    """Output rows [y0, y0 + target rows) of the upsampled ``logits`` -> one vector [1 + 3C]:
    the cross-entropy sum and :func:`_dice_sums` of the band.

    A margin of one logit row on each side makes the band's bilinear weights those of the
    whole map (align_corners=False reads rows floor((y + 0.5) / scale - 0.5) and the next)."""
    rows = target.shape[-2]
    first = max(0, y0 // scale - 1)
    last = min(logits.shape[-2], (y0 + rows - 1) // scale + 2)
    upsampled = F.interpolate(
        logits[:, :, first:last], scale_factor=scale, mode="bilinear", align_corners=False
    )
    band = upsampled[:, :, y0 - first * scale : y0 - first * scale + rows]
    ce = F.cross_entropy(band, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return torch.cat([ce[None], *_dice_sums(band, target)])


def _full_losses(logits: Tensor, target: Tensor, dice: bool) -> tuple[Tensor, Tensor]:
    """:func:`banded_pixel_losses` in one piece (any output size)."""
    upsampled = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    ce = F.cross_entropy(upsampled, target, ignore_index=IGNORE_INDEX)
    return ce, soft_dice_loss(upsampled, target) if dice else ce.new_zeros(())


def soft_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """1 - the mean soft Dice coefficient over the classes present in ``target``.

    logits: [B, C, H, W]; target: [B, H, W] int64 class ids, ``IGNORE_INDEX`` where unlabelled
    (those pixels count for nothing). Each class's Dice is 2|P*T| / (|P| + |T|) over the batch,
    with P the softmax probabilities and T the one-hot target."""
    return _dice_from_sums(*_dice_sums(logits, target))


def _dice_sums(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class sums [C] of a batch (or a band of rows): |P*T|, |P| and |T| over labelled
    pixels. Sums, so bands add up to the whole."""
    valid = target != IGNORE_INDEX  # [B, H, W]
    classes = target.where(valid, 0)
    probs = logits.softmax(1) * valid.unsqueeze(1)
    # Per-class sums by index_add over the pixels, not a [B, C, H, W] one-hot (memory); an
    # unlabelled pixel adds 0 to class 0. No boolean indexing: no host-device sync.
    true_prob = probs.gather(1, classes.unsqueeze(1)).flatten()
    overlap = torch.zeros(logits.shape[1], device=logits.device).index_add_(
        0, classes.flatten(), true_prob
    )
    counts = torch.zeros_like(overlap).index_add_(0, classes.flatten(), valid.flatten().float())
    return overlap, probs.sum((0, 2, 3)), counts


def _dice_from_sums(overlap: Tensor, prob_sum: Tensor, counts: Tensor) -> Tensor:
    present = counts > 0
    dice = 2 * overlap / (prob_sum + counts).clamp(min=1e-7)  # no smoothing (smp's default)
    return ((1 - dice) * present).sum() / present.sum().clamp(min=1)


def resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """A class map [h, w] resized to ``size`` (h, w) by nearest neighbour (pixel centres)."""
    resized = F.interpolate(labels[None, None].float(), size=size, mode="nearest-exact")
    return resized[0, 0].to(labels.dtype)


def _pad_to(sem_seg: Tensor, shape: tuple[int, int]) -> Tensor:
    """Pad an [h, w] label map bottom/right with the ignore index to ``shape``."""
    pad_h, pad_w = shape[0] - sem_seg.shape[0], shape[1] - sem_seg.shape[1]
    if pad_h == 0 and pad_w == 0:
        return sem_seg
    return F.pad(sem_seg, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
