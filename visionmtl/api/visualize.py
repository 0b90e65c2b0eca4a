"""Overlay pictures of predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from visionmtl.structures import BACKGROUND

if TYPE_CHECKING:
    from visionmtl.api.instance_masks import InstanceMasks
    from visionmtl.api.result import Result


def colour_for(category_id: int) -> tuple[int, int, int]:
    """A stable, distinct colour per category id (golden-ratio hue steps)."""
    hue = (category_id * 0.618033988749895) % 1.0
    rgb = Image.new("HSV", (1, 1), (int(hue * 255), 200, 255)).convert("RGB").getpixel((0, 0))
    return tuple(int(c) for c in rgb)


def instance_colour(index: int) -> tuple[int, int, int]:
    """A colour per instance (detection ``index``), so that touching people stay apart."""
    return colour_for(1009 + 7 * index)


def _paint_instances(
    canvas: torch.Tensor, masks: InstanceMasks, colours: list[tuple[int, int, int]], alpha: float
) -> torch.Tensor:
    """Blend each mask's colour into uint8 ``canvas`` [3, H, W] in place, as
    ``draw_segmentation_masks`` blends (one blend with ``alpha``), except that where masks
    overlap the later one is drawn (torchvision blackens overlaps); each mask is painted only
    over its crop: no [N, H, W] array (100 masks of a 12 MP photo: 1.2 GB)."""
    layer = canvas.clone()
    covered = torch.zeros(canvas.shape[1:], dtype=torch.bool)
    for crop, (x_lo, y_lo, x_hi, y_hi), colour in zip(
        masks.crops, masks.regions.tolist(), colours, strict=True
    ):
        region = torch.from_numpy(crop)
        layer[:, y_lo:y_hi, x_lo:x_hi][:, region] = torch.tensor(colour, dtype=torch.uint8)[:, None]
        covered[y_lo:y_hi, x_lo:x_hi] |= region
    blended = canvas[:, covered] * (1 - alpha) + layer[:, covered] * alpha
    canvas[:, covered] = blended.to(torch.uint8)
    return canvas


def draw_result(
    image: np.ndarray,
    result: Result,
    alpha: float = 0.45,
    sem: bool = True,
    masks: bool = True,
    boxes: bool = True,
    legend: bool = True,
    scores: bool = True,
    legend_all: bool = False,
) -> np.ndarray:
    """The semantic map (background left clear), instance masks and boxes (class name and, with
    ``scores``, score on a filled label) drawn on ``image``, with a legend of the semantic classes
    shown (``legend_all``: every semantic class of the result, shown or not, so that the picture
    has one size for every frame of a video).

    image: [H, W, 3] uint8 RGB at the result's original size. Returns a new uint8 array
    [H, W, 3], or [H, W + legend width, 3] with a legend."""
    canvas = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a copy: PIL arrays are read-only
    shown: list[tuple[str, tuple[int, int, int]]] = []
    if sem and result.sem_seg is not None:
        ids = [int(i) for i in np.unique(result.sem_seg) if result.sem_class_names.get(int(i))]
        ids = [i for i in ids if result.sem_class_names[i] != BACKGROUND]
        if ids:
            regions = torch.from_numpy(result.sem_seg[None] == np.asarray(ids)[:, None, None])
            colours = [colour_for(i) for i in ids]
            canvas = draw_segmentation_masks(canvas, regions, alpha=alpha, colors=colours)
            shown = [(result.sem_class_names[i], c) for i, c in zip(ids, colours, strict=True)]
    colours = [instance_colour(i) for i in range(len(result))]
    if masks and result.masks is not None and len(result):
        canvas = _paint_instances(canvas, result.masks, colours, alpha=0.55)
    if boxes and len(result):
        labels = list(result.label_names)  # ground truth (scores=False): names only
        if scores:
            labels = [f"{n} {s:.2f}" for n, s in zip(labels, result.scores, strict=True)]
        canvas = draw_bounding_boxes(
            canvas,
            torch.from_numpy(result.boxes.astype(np.float32)),
            labels=labels,
            colors=colours,
            width=2,
            fill_labels=True,
        )
    picture = canvas.permute(1, 2, 0).numpy()
    if legend_all and result.sem_seg is not None:
        names = result.sem_class_names.items()
        shown = [(name, colour_for(i)) for i, name in names if name != BACKGROUND]
    return _with_legend(picture, shown) if legend and shown else picture


def _with_legend(
    picture: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]
) -> np.ndarray:
    """``picture`` with a white strip on its right listing each (name, colour)."""
    row, width = 14, 110
    height = max(picture.shape[0], row * len(entries) + 4)
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for k, (name, colour) in enumerate(entries):
        top = 2 + k * row
        draw.rectangle([4, top + 1, 14, top + 11], fill=colour, outline=(0, 0, 0))
        draw.text((19, top), name, fill=(0, 0, 0))
    out = np.full((height, picture.shape[1] + width, 3), 255, np.uint8)
    out[: picture.shape[0], : picture.shape[1]] = picture
    out[:, picture.shape[1] :] = np.asarray(strip)
    return out


def image_grid(pictures: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Tile [H, W, 3] pictures (padded to the largest) into one grid image."""
    height = max(p.shape[0] for p in pictures)
    width = max(p.shape[1] for p in pictures)
    rows = (len(pictures) + columns - 1) // columns
    grid = np.full((rows * height, min(columns, len(pictures)) * width, 3), 255, np.uint8)
    for i, picture in enumerate(pictures):
        row, col = divmod(i, columns)
        grid[
            row * height : row * height + picture.shape[0],
            col * width : col * width + picture.shape[1],
        ] = picture
    return grid
