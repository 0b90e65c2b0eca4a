"""Paste fixed-size instance masks into their boxes of a full image with ``grid_sample``, box by box.

Why not torchvision's ``paste_masks_in_image`` (``models/detection/roi_heads.py``): it truncates
the (1-cell padded, hence enlarged) boxes to whole pixels and uses the legacy "+1" box size, so
masks land up to two pixels off the box the mask head was trained on (``MaskHead.mask_targets``
cuts the targets with ``roi_align(aligned=True)`` at sub-pixel box coordinates, pixel i covering
[i, i + 1)). Measured: an all-ones 28 x 28 mask in the box [10, 20, 30, 50] fills columns 10-29
but rows 19-50 (32 rows, not 30); here it fills exactly [20:50, 10:30]. It also keeps one float32
full-image mask per instance (twice, list + stack), where this returns bool and samples each mask
only over its own box (plus a pixel of margin): the work and the temporaries are the sum of the
box areas, not K full images (nor, as before, K times the union box of a chunk of instances).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def paste_masks(
    mask_probs: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    threshold: float = 0.5,
) -> Tensor:
    """Bilinearly resample each mask into its box of an image and threshold it.

    Args:
        mask_probs: [K, M, M] (or [K, Mh, Mw]) foreground probabilities; mask cell (0, 0) covers the
            box's top-left corner and the mask spans the whole box.
        boxes: [K, 4] xyxy in pixels of the output image (pixel i covers [i, i + 1)).
        image_size: (h, w) of the output.
        threshold: a pixel is foreground where the resampled probability is >= threshold.

    Returns:
        [K, h, w] bool, False outside each box.
    """
    crops, regions = paste_mask_crops(mask_probs, boxes, image_size, threshold)
    height, width = int(image_size[0]), int(image_size[1])
    pasted = torch.zeros(len(crops), height, width, dtype=torch.bool, device=mask_probs.device)
    for k, (crop, (x_lo, y_lo, x_hi, y_hi)) in enumerate(zip(crops, regions.tolist(), strict=True)):
        pasted[k, y_lo:y_hi, x_lo:x_hi] = crop
    return pasted


def paste_mask_crops(
    mask_probs: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    threshold: float = 0.5,
) -> tuple[list[Tensor], Tensor]:
    """:func:`paste_masks` without the full-image canvas: per mask its bool crop ``[rh, rw]`` and
    the regions int64 ``[K, 4]`` (x_lo, y_lo, x_hi, y_hi, CPU) the crops cover (the box plus a
    pixel of margin, clipped to the image; possibly empty). Memory: the sum of the box areas."""
    if mask_probs.dim() != 3 or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"paste_mask_crops expects mask_probs [K, M, M] and boxes [K, 4], got "
            f"{tuple(mask_probs.shape)} and {tuple(boxes.shape)}"
        )
    if mask_probs.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"paste_mask_crops got {mask_probs.shape[0]} masks but {boxes.shape[0]} boxes"
        )
    height, width = int(image_size[0]), int(image_size[1])
    masks = mask_probs.float()
    boxes = boxes.to(device=mask_probs.device, dtype=torch.float32)
    # Every box's pixel region in one device-to-host copy (one synchronisation, not one per box).
    regions = _pixel_regions(boxes.cpu(), height, width)
    crops = []
    for k, region in enumerate(regions):
        x_lo, y_lo, x_hi, y_hi = region
        if x_hi > x_lo and y_hi > y_lo:
            crops.append(_paste_one(masks[k], boxes[k], region, threshold))
        else:
            regions[k] = (0, 0, 0, 0)
            crops.append(torch.zeros(0, 0, dtype=torch.bool, device=mask_probs.device))
    return crops, torch.tensor(regions, dtype=torch.int64).reshape(-1, 4)


def _pixel_regions(boxes: Tensor, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Boxes [K, 4] (CPU) -> per box the pixel range (x_lo, y_lo, x_hi, y_hi) it touches, with a
    pixel of margin, clipped to the image (possibly empty)."""
    regions = []
    for x0, y0, x1, y1 in boxes.tolist():
        if not all(map(math.isfinite, (x0, y0, x1, y1))):
            regions.append((0, 0, 0, 0))  # nothing to paste for a NaN / inf box
            continue
        x_lo, y_lo = max(0, math.floor(x0) - 1), max(0, math.floor(y0) - 1)
        x_hi, y_hi = min(width, math.ceil(x1) + 1), min(height, math.ceil(y1) + 1)
        regions.append((x_lo, y_lo, x_hi, y_hi))
    return regions


def _paste_one(
    mask: Tensor, box: Tensor, region: tuple[int, int, int, int], threshold: float
) -> Tensor:
    """One mask [Mh, Mw] resampled at the pixel centres of ``region`` -> [rh, rw] bool."""
    x_lo, y_lo, x_hi, y_hi = region
    device = mask.device
    xs = torch.arange(x_lo, x_hi, device=device, dtype=torch.float32) + 0.5  # pixel centres
    ys = torch.arange(y_lo, y_hi, device=device, dtype=torch.float32) + 0.5
    box_w = (box[2] - box[0]).clamp(min=1e-4)
    box_h = (box[3] - box[1]).clamp(min=1e-4)
    # Box edges map to -1 / +1 (align_corners=False: the mask's outer cell borders).
    grid_x = (xs - box[0]) / box_w * 2 - 1  # [rw]
    grid_y = (ys - box[1]) / box_h * 2 - 1  # [rh]
    grid = torch.stack(
        [grid_x[None, :].expand(len(ys), -1), grid_y[:, None].expand(-1, len(xs))], dim=2
    )
    sampled = F.grid_sample(mask[None, None], grid[None], mode="bilinear", align_corners=False)
    # Pixel centres inside the box; also makes a threshold <= 0 keep the outside False.
    inside = (grid_y.abs() <= 1)[:, None] & (grid_x.abs() <= 1)[None, :]
    return (sampled[0, 0] >= threshold) & inside
