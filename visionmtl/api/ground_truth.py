"""Ground truth drawn with the predictions' drawer (``visionmtl check --draw DIR``): users see their
boxes, masks and semantic labels as the model will learn them, before training."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from visionmtl.api.io import load_rgb
from visionmtl.api.result import Result
from visionmtl.api.writer import free_path
from visionmtl.data import CocoDataset, DataError
from visionmtl.data.semantic_png import png_pairs, read_class_ids
from visionmtl.errors import InputError
from visionmtl.structures import IGNORE_INDEX

Item = tuple[Path, np.ndarray, Result]  # image path, image [H, W, 3] uint8 RGB, its ground truth


def coco_ground_truth(ann_file: str | Path, image_dir: str | Path) -> Iterator[Item]:
    """An item per readable image of a COCO set, its annotations as the training reads them
    (``on_invalid="skip"``: what the checker reports as errors is left out, and so are images
    that fail to load; crowd regions are not drawn). Scores are 1."""
    dataset = CocoDataset(ann_file, image_dir, on_invalid="skip", max_bad_fraction=1.0)
    category_ids = np.asarray(dataset.category_ids, np.int64)
    for index in range(len(dataset)):
        info = dataset.image_info(index)
        try:
            image = dataset.load_image(index)
        except DataError:
            continue  # the check report lists it
        boxes, labels, masks = dataset.original_instances(index)
        yield (
            info["path"],
            image,
            Result(
                boxes=boxes.astype(np.float32),
                scores=np.ones(len(labels), np.float32),
                labels=category_ids[labels],
                label_names=[dataset.class_names[k] for k in labels],
                sem_seg=None,
                image_size=(info["height"], info["width"]),
                masks=None if masks is None else masks.astype(bool),
            ),
        )


def png_ground_truth(
    image_dir: str | Path, mask_dir: str | Path, names: Mapping[int, str | None] | None
) -> Iterator[Item]:
    """An item per image of a semantic PNG set whose image and class map can be read and have one
    size (the check report lists the others). ``names``: PNG id -> class name (None: ignored,
    not drawn); without it every id but 0 (background) and 255 (ignored) is drawn as ``id <k>``."""
    images, masks = png_pairs(Path(image_dir), Path(mask_dir))
    for path, mask in zip(images, masks, strict=True):
        try:
            ids, image = read_class_ids(mask).astype(np.int64), load_rgb(path)
        except (DataError, InputError):
            continue
        if image.shape[:2] != ids.shape:
            continue
        if names is None:  # the default convention: 0 background, 255 ignored
            shown = {int(k): f"id {int(k)}" for k in np.unique(ids) if k not in (0, IGNORE_INDEX)}
        else:
            shown = {int(k): name for k, name in names.items() if name is not None}
        yield (
            path,
            image,
            Result(
                boxes=np.zeros((0, 4), np.float32),
                scores=np.zeros(0, np.float32),
                labels=np.zeros(0, np.int64),
                label_names=[],
                sem_seg=ids,
                image_size=ids.shape,
                sem_class_names=shown,
            ),
        )


def draw_ground_truth(items: Iterator[Item], out_dir: str | Path, limit: int = 16) -> list[Path]:
    """Draw the first ``limit`` items (0: all) as ``out_dir/<stem>_gt.png`` (a free name: existing
    files are never overwritten); returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()
    for path, image, result in items:
        if limit and len(written) >= limit:
            break
        picture = result.plot(image, scores=False)
        target = free_path(out_dir, f"{path.stem}_gt", ".png", taken)
        Image.fromarray(picture).save(target)
        written.append(target)
    return written
