"""Overlay pictures of predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from visionmtl.api.result import Result


def colour_for(category_id: int) -> tuple[int, int, int]:
    """A stable, distinct colour per category id (golden-ratio hue steps)."""
    hue = (category_id * 0.618033988749895) % 1.0
    rgb = Image.new("HSV", (1, 1), (int(hue * 255), 200, 255)).convert("RGB").getpixel((0, 0))
    return tuple(int(c) for c in rgb)


def draw_result(image: np.ndarray, result: Result, alpha: float = 0.45) -> np.ndarray:
    """Blend the semantic map (non-background pixels) and draw boxes with name and score.

    image: [H, W, 3] uint8 RGB at the result's original size. Returns a new [H, W, 3] uint8 array."""
    canvas = image.astype(np.float32).copy()
    if result.sem_seg is not None:
        for category_id in np.unique(result.sem_seg):
            if category_id == 0:
                continue
            region = result.sem_seg == category_id
            canvas[region] = (1 - alpha) * canvas[region] + alpha * np.array(
                colour_for(int(category_id))
            )
    picture = Image.fromarray(canvas.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for box, score, label, name in zip(
        result.boxes, result.scores, result.labels, result.label_names, strict=True
    ):
        colour = colour_for(int(label))
        draw.rectangle([float(v) for v in box], outline=colour, width=2)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {score:.2f}", fill=colour)
    return np.asarray(picture)


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
