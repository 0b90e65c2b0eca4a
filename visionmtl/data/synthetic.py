"""A synthetic COCO-format data set of coloured shapes (detection + instance + semantic masks).

The shape is the class and the colour is random, objects are large and at most mildly occluded, so a
small model trained from scratch on a CPU learns it in minutes. Category ids are deliberately not
contiguous (1, 3, 7) to exercise the id -> label mapping. Fully visible objects are annotated with
polygons, occluded ones with compressed RLE of their visible region, so both formats are covered.
Everything is drawn from one seeded generator: the same seed gives byte-identical files.
"""

from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from visionmtl.data.rasterize import decode_rle

CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "square", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
]
SIZE_RANGE: tuple[float, float] = (0.15, 0.5)  # object size as a fraction of the image side
MIN_VISIBLE_FRACTION: float = 0.6
EMPTY_IMAGE_PROB: float = 0.05
MAX_OBJECTS: int = 4
MIN_HUE_DISTANCE: float = 0.15  # between objects of one image, on the unit hue circle
_PLACEMENT_TRIES: int = 20


def _shape_polygon(name: str, center: np.ndarray, size: float, angle: float) -> np.ndarray:
    """Vertices ``[K, 2]`` (x, y) of a shape of extent ``size`` pixels, rotated by ``angle`` rad."""
    radius = size / 2.0
    if name == "circle":
        count, start, spread = 48, 0.0, radius
    elif name == "square":
        count, start, spread = 4, math.pi / 4, radius * math.sqrt(2.0)
    else:  # triangle, circumradius chosen so its height is ~size
        count, start, spread = 3, -math.pi / 2, size / 1.5
    thetas = start + angle + np.arange(count) * (2 * math.pi / count)
    points = np.stack([np.cos(thetas), np.sin(thetas)], axis=1) * spread
    if name == "triangle":  # centre the bounding box, not the centroid
        points[:, 1] -= (points[:, 1].max() + points[:, 1].min()) / 2
    return points + center


def _rasterize(polygon: list[float], image_size: int) -> np.ndarray:
    """Rasterise a flat polygon with pycocotools (so its annotation decodes to exactly these pixels)."""
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], image_size, image_size))
    return decode_rle(rle).astype(bool)


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A dull, low-saturation background with a mild linear gradient, float ``[H, W, 3]``."""
    hue, saturation, value = rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.2, 0.55)
    base = np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255.0
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-8
    coords = np.linspace(-1.0, 1.0, image_size)
    ramp = direction[0] * coords[None, :] + direction[1] * coords[:, None]
    return base[None, None, :] + ramp[:, :, None] * rng.uniform(5.0, 25.0)


def _random_colours(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Saturated RGB colours (float, 0..255) with hues apart, so touching objects stay separable."""
    hues: list[float] = []
    for _ in range(count):
        hue = rng.random()
        for _ in range(_PLACEMENT_TRIES):
            if all(
                min(abs(hue - other), 1 - abs(hue - other)) >= MIN_HUE_DISTANCE for other in hues
            ):
                break
            hue = rng.random()
        hues.append(hue)
    return [
        np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))) * 255.0
        for hue in hues
    ]


def _place_objects(
    rng: np.random.Generator, image_size: int
) -> list[tuple[int, list[float], np.ndarray]]:
    """Draw (category index, flat polygon, full mask) triples, bottom to top, each kept ≥60% visible."""
    if rng.random() < EMPTY_IMAGE_PROB:
        return []
    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    placed: list[tuple[int, list[float], np.ndarray]] = []
    for _ in range(num_objects):
        for _ in range(_PLACEMENT_TRIES):
            category = int(rng.integers(len(CATEGORIES)))
            name = CATEGORIES[category]["name"]
            size = rng.uniform(*SIZE_RANGE) * image_size
            angle = rng.uniform(-math.pi / 12, math.pi / 12) if name != "circle" else 0.0
            polygon = _shape_polygon(name, np.zeros(2), size, angle)
            low, high = -polygon.min(axis=0), image_size - 1 - polygon.max(axis=0)
            if np.any(high <= low):
                continue
            flat = np.round(polygon + rng.uniform(low, high), 2).reshape(-1).tolist()
            mask = _rasterize(flat, image_size)
            if _keeps_visible([m for _, _, m in placed], mask):
                placed.append((category, flat, mask))
                break
    return placed


def _keeps_visible(placed_masks: list[np.ndarray], new_mask: np.ndarray) -> bool:
    """Whether every placed mask stays ≥ MIN_VISIBLE_FRACTION visible under ``new_mask``."""
    covering = new_mask.copy()
    for mask in reversed(placed_masks):
        visible = mask & ~covering
        if visible.sum() < MIN_VISIBLE_FRACTION * mask.sum():
            return False
        covering |= mask
    return True


def _annotate(
    objects: list[tuple[int, np.ndarray]],
    polygons: list[list[float]],
    image_id: int,
    first_annotation_id: int,
) -> list[dict[str, Any]]:
    """COCO annotations of the visible region of each object (bottom to top)."""
    annotations = []
    covering = np.zeros_like(objects[0][1]) if objects else None
    for index in reversed(range(len(objects))):
        category, mask = objects[index]
        visible = mask & ~covering
        covering |= mask
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        fully_visible = bool(visible.sum() == mask.sum())
        if fully_visible:
            segmentation: Any = [polygons[index]]
        else:
            segmentation = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
        annotations.append(
            {
                "id": first_annotation_id + index,
                "image_id": image_id,
                "category_id": CATEGORIES[category]["id"],
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "area": float(visible.sum()),
                "segmentation": segmentation,
                "iscrowd": 0,
            }
        )
    annotations.reverse()
    return annotations


def _render(
    rng: np.random.Generator, image_size: int, objects: list[tuple[int, np.ndarray]]
) -> np.ndarray:
    canvas = _background(rng, image_size)
    for (_, mask), colour in zip(objects, _random_colours(rng, len(objects)), strict=True):
        canvas[mask] = colour
    canvas += rng.normal(0.0, 4.0, size=canvas.shape)
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def _generate_split(
    rng: np.random.Generator, num_images: int, image_size: int, ann_path: Path, image_dir: Path
) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        placed = _place_objects(rng, image_size)
        objects = [(category, mask) for category, _, mask in placed]
        polygons = [polygon for _, polygon, _ in placed]
        Image.fromarray(_render(rng, image_size, objects)).save(image_dir / file_name)
        images.append(
            {"id": image_id, "file_name": file_name, "height": image_size, "width": image_size}
        )
        annotations += _annotate(objects, polygons, image_id, len(annotations) + 1)
    data = {
        "info": {"description": "visionmtl synthetic shapes", "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


def generate_shapes(
    out_dir: str | Path,
    num_train: int = 600,
    num_val: int = 100,
    image_size: int = 128,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the shapes data set under ``out_dir`` and return its paths.

    Layout: ``annotations/{train,val}.json`` and ``images/{train,val}/NNNNNN.png``.
    Returns ``{"train_ann", "train_images", "val_ann", "val_images"}``.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must not be negative")
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        rng = np.random.default_rng([seed, split_index])
        ann_path = out_dir / "annotations" / f"{split}.json"
        image_dir = out_dir / "images" / split
        _generate_split(rng, count, image_size, ann_path, image_dir)
        paths[f"{split}_ann"] = ann_path
        paths[f"{split}_images"] = image_dir
    return paths
