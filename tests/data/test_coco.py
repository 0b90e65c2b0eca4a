"""Tests for visionmtl/data/coco.py."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import pickle
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from visionmtl.data import CocoDataset, Collator, DataError, build_transforms
from visionmtl.data.batching import worker_options
from visionmtl.data.rasterize import crop_regions

# pycocotools' annToMask trips a numpy-2 DeprecationWarning inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")


def _load_coco(ann_file: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


def _square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _write_set(root: Path, annotations: list[dict[str, Any]], **overrides: Any) -> Path:
    """A hand-made two-image (40x50 each) set; returns the JSON path (images under root/images)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(root / "images" / name)
    data = {
        "images": [
            {"id": 10, "file_name": "a.png", "height": 40, "width": 50},
            {"id": 20, "file_name": "b.png", "height": 40, "width": 50},
        ],
        "annotations": annotations,
        "categories": [{"id": 9, "name": "nine"}, {"id": 2, "name": "two"}],
    }
    data.update(overrides)
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return ann_file


def _sample(mask: np.ndarray, region: np.ndarray, size: int) -> np.ndarray:
    """``mask`` [H, W] read at the cell centres of a ``size`` x ``size`` grid over ``region`` (xyxy),
    nearest pixel, 0 outside: what a mask crop over ``region`` should hold."""
    x0, y0, x1, y1 = region.tolist()
    xs = np.floor(x0 + (np.arange(size) + 0.5) * (x1 - x0) / size).astype(int)
    ys = np.floor(y0 + (np.arange(size) + 0.5) * (y1 - y0) / size).astype(int)
    inside = (ys[:, None] >= 0) & (ys[:, None] < mask.shape[0])
    inside = inside & (xs[None, :] >= 0) & (xs[None, :] < mask.shape[1])
    values = mask[ys.clip(0, mask.shape[0] - 1)[:, None], xs.clip(0, mask.shape[1] - 1)[None, :]]
    return np.where(inside, values, 0)


def _check_against_pycocotools(dataset: CocoDataset) -> None:
    coco = _load_coco(dataset.ann_file)
    for index, image_id in enumerate(dataset.image_ids):
        image, target = dataset[index]
        info = coco.imgs[image_id]
        assert image.shape == (3, info["height"], info["width"])
        assert target["image_id"].item() == image_id
        assert target["orig_size"].tolist() == target["image_size"].tolist()
        anns = [a for a in coco.imgToAnns[image_id] if not a["iscrowd"]]
        crops, regions = target["mask_crops"], target["mask_regions"]
        assert len(target["boxes"]) == len(anns) == len(crops) == len(target["labels"])
        _, _, masks = dataset.original_instances(index)  # full-size masks, for evaluation
        assert masks is not None and len(masks) == len(anns)
        for ann, box, crop, region, mask, label in zip(
            anns, target["boxes"], crops, regions, masks, target["labels"], strict=True
        ):
            x, y, w, h = ann["bbox"]
            np.testing.assert_allclose(box.numpy(), [x, y, x + w, y + h], atol=1e-3)
            np.testing.assert_array_equal(mask, coco.annToMask(ann))
            # the crop covers the box and holds the mask there: the polygon drawn on the crop's
            # grid, against pixels read at its cells (blocky where a small object is enlarged)
            np.testing.assert_allclose(region.numpy(), crop_regions(box.numpy())[0], rtol=1e-6)
            expected = _sample(coco.annToMask(ann), region.numpy(), crop.shape[-1]).astype(bool)
            drawn = crop.numpy().astype(bool)
            assert (drawn & expected).sum() >= 0.75 * (drawn | expected).sum() > 0
            assert dataset.category_ids[label] == ann["category_id"]
        crowd = [a for a in coco.imgToAnns[image_id] if a["iscrowd"]]
        sem_seg = target["sem_seg"]
        for ann in crowd:
            assert (sem_seg[torch.from_numpy(coco.annToMask(ann)) > 0] == 255).all()
        if not crowd:
            union = masks.sum(0) > 0 if len(anns) else np.zeros(tuple(sem_seg.shape), bool)
            # drawn box by box at the image's size: the same pixels but a few on outlines
            assert ((sem_seg.numpy() > 0) != union).mean() < 1e-3


def test_matches_pycocotools_on_shapes(shapes_paths: dict[str, Path]) -> None:
    dataset = CocoDataset(shapes_paths["val_ann"], shapes_paths["val_images"])
    assert len(dataset) == 8
    _check_against_pycocotools(dataset)


def test_matches_pycocotools_on_coco_tiny(shared_data_dir: Path) -> None:
    root = shared_data_dir / "coco_tiny"
    dataset = CocoDataset(
        root / "annotations" / "instances_val2017.json", root / "images" / "val2017"
    )
    assert dataset.category_ids == sorted(dataset.category_ids) and len(dataset.category_ids) == 80
    assert dataset.cat_id_to_label[90] == 79
    _check_against_pycocotools(dataset)
    crowd_images = [
        a["image_id"] for a in _load_coco(dataset.ann_file).anns.values() if a["iscrowd"]
    ]
    _, target = dataset[dataset.image_ids.index(crowd_images[0])]
    assert (target["sem_seg"] == 255).any()


def test_non_contiguous_ids_map_to_sorted_labels(shapes_paths: dict[str, Path]) -> None:
    dataset = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"])
    assert dataset.category_ids == [1, 3, 7]
    assert dataset.class_names == ["circle", "square", "triangle"]
    assert dataset.cat_id_to_label == {1: 0, 3: 1, 7: 2}
    labels = torch.cat([dataset[i][1]["labels"] for i in range(len(dataset))])
    assert set(labels.tolist()) == {0, 1, 2}


def test_crowd_sem_seg_order_and_empty_image(tmp_path: Path) -> None:
    crowd_rle = mask_utils.encode(
        np.asfortranarray(np.pad(np.ones((5, 5), np.uint8), ((30, 5), (40, 5))))
    )
    uncompressed = {"size": [40, 50], "counts": [0, 2000]}  # whole image, column-major counts
    annotations = [
        {
            "id": 1,
            "image_id": 10,
            "category_id": 9,
            "bbox": [0, 0, 30, 30],
            "segmentation": _square(0, 0, 30, 30),
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 10,
            "category_id": 2,
            "bbox": [10, 10, 10, 10],
            "segmentation": _square(10, 10, 20, 20),
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 10,
            "category_id": 2,
            "bbox": [40, 30, 5, 5],
            "segmentation": {"size": [40, 50], "counts": crowd_rle["counts"].decode()},
            "iscrowd": 1,
        },
        {
            "id": 4,
            "image_id": 10,
            "category_id": 9,
            "bbox": [0, 0, 0, 5],
            "segmentation": uncompressed,
            "iscrowd": 0,
        },  # zero width: dropped
    ]
    dataset = CocoDataset(_write_set(tmp_path, annotations), tmp_path / "images")
    assert dataset.category_ids == [2, 9]
    _, target = dataset[0]
    assert target["labels"].tolist() == [1, 0]  # crowd and zero-width excluded
    sem_seg = target["sem_seg"]
    assert sem_seg[15, 15] == 1  # small "two" painted on top of the large "nine"
    assert sem_seg[5, 5] == 2
    assert (sem_seg[30:35, 40:45] == 255).all() and sem_seg[36, 46] == 0
    _, empty = dataset[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert empty["mask_crops"].shape == (0, 64, 64) and empty["mask_crops"].dtype == torch.uint8
    assert empty["mask_regions"].shape == (0, 4)
    assert empty["sem_seg"].shape == (40, 50) and (empty["sem_seg"] == 0).all()


def test_uncompressed_rle_and_resize(tmp_path: Path) -> None:
    mask = np.zeros((40, 50), np.uint8)
    mask[8:24, 10:30] = 1
    runs = [(int(v), len(list(g))) for v, g in itertools.groupby(mask.flatten(order="F"))]
    counts = ([0] if runs[0][0] == 1 else []) + [length for _, length in runs]
    annotations = [
        {
            "id": 1,
            "image_id": 20,
            "category_id": 9,
            "bbox": [10, 8, 20, 16],
            "segmentation": {"size": [40, 50], "counts": counts},
            "iscrowd": 0,
        }
    ]
    ann_file = _write_set(tmp_path, annotations)
    full = CocoDataset(ann_file, tmp_path / "images")
    np.testing.assert_array_equal(full.original_instances(1)[2][0], mask)
    crop = full[1][1]["mask_crops"][0]
    assert crop[1:-1, 1:-1].eq(1).all() and crop.sum() == 62 * 62  # the box, a cell of margin
    resized = CocoDataset(ann_file, tmp_path / "images", build_transforms(100, train=False))
    image, target = resized[1]
    assert image.shape == (3, 80, 100)
    assert target["image_size"].tolist() == [80, 100] and target["orig_size"].tolist() == [40, 50]
    np.testing.assert_allclose(target["boxes"][0].numpy(), [20, 16, 60, 48], atol=1e-3)
    assert target["mask_crops"].shape == (1, 64, 64) and target["sem_seg"].shape == (80, 100)
    margin = np.array([-40, -32, 40, 32]) / 62  # one cell of the 64-cell crop over the box
    np.testing.assert_allclose(
        target["mask_regions"][0].numpy(), [20, 16, 60, 48] + margin, atol=1e-3
    )
    assert target["mask_crops"][0].sum() == 62 * 62
    assert target["sem_seg"][16:48, 20:60].eq(2).all() and target["sem_seg"].sum() == 2 * 32 * 40


def test_broken_and_missing_image_raise(tmp_path: Path) -> None:
    dataset = CocoDataset(_write_set(tmp_path, []), tmp_path / "images")
    good = (tmp_path / "images" / "a.png").read_bytes()
    (tmp_path / "images" / "a.png").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match="a.png"):
        dataset[0]
    (tmp_path / "images" / "b.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="b.png"):
        dataset.load_image(1)
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png.*not found"):
        dataset[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"category_id": 5}, r"annotation 7 .*category_id 5 is not declared"),
        ({"image_id": 99}, r"annotation 7 .*image_id 99 is not listed"),
        ({"bbox": None}, r"annotation 7 .*bbox"),
    ],
)
def test_malformed_annotation_raises(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    annotation = {
        "id": 7,
        "image_id": 10,
        "category_id": 9,
        "bbox": [0, 0, 5, 5],
        "segmentation": _square(0, 0, 5, 5),
        "iscrowd": 0,
    } | change
    ann_file = _write_set(tmp_path, [annotation])
    with pytest.raises(DataError, match=message) as error:
        CocoDataset(ann_file, tmp_path / "images")
    assert str(ann_file) in str(error.value)


def test_malformed_json_structure_raises(tmp_path: Path) -> None:
    ann_file = _write_set(tmp_path, [], categories=None)
    with pytest.raises(DataError, match="categories") as error:
        CocoDataset(ann_file, tmp_path / "images")
    assert str(ann_file) in str(error.value)
    ann_file.write_text("{not json")
    with pytest.raises(DataError, match="JSON"):
        CocoDataset(ann_file, tmp_path / "images")
    with pytest.raises(DataError, match="not found"):
        CocoDataset(tmp_path / "missing.json", tmp_path / "images")


def test_picklable_and_spawn_dataloader(shapes_paths: dict[str, Path]) -> None:
    dataset = CocoDataset(
        shapes_paths["val_ann"], shapes_paths["val_images"], build_transforms(64, train=True)
    )
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.image_ids == dataset.image_ids
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=4,
        num_workers=1,
        multiprocessing_context="spawn",
        collate_fn=Collator(32),
    )
    batches = list(loader)
    assert len(batches) == 2
    images, targets = batches[0]
    assert images.shape[0] == 4 and images.shape[-1] % 32 == 0
    assert [t["image_id"].item() for t in targets] == dataset.image_ids[:4]


def test_a_worker_forked_after_the_parent_used_opencv_still_loads(tmp_path: Path) -> None:
    """OpenCV's thread pool, once it has run in the parent, hangs ``cv2.setNumThreads`` in a forked
    worker: ``worker_options`` (what the training and evaluation loaders are built with) limits
    OpenCV in the parent first. Without that this test's worker hangs (its timeout fails it)."""
    mask = np.zeros((40, 50), np.uint8)
    mask[8:24, 10:30] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    annotation = {"id": 1, "image_id": 10, "category_id": 9, "bbox": [10, 8, 20, 16]}
    annotation |= {"segmentation": {"size": [40, 50], "counts": rle["counts"].decode()}}
    transform = build_transforms(400, train=True, compact=True)  # large: OpenCV goes parallel
    dataset = CocoDataset(_write_set(tmp_path, [annotation]), tmp_path / "images", transform)
    cv2.setNumThreads(2)  # what another test, or the user's process, may have left
    for _ in range(3):
        dataset[0]  # the parent runs OpenCV first, with its thread pool
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=2,
        collate_fn=Collator(),
        multiprocessing_context="fork",
        timeout=60,  # a hung worker fails the test instead of the suite
        **worker_options(1),
    )
    _, targets = next(iter(loader))
    assert targets[0]["mask_crops"].shape == (1, 64, 64) and targets[0]["mask_crops"].sum() > 3000


def test_the_training_loader_limits_opencv_before_its_workers_fork(
    shapes_paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import visionmtl.data.batching as batching
    from visionmtl.config import load_config
    from visionmtl.engine.training_run import TrainingRun

    calls: list[int] = []
    monkeypatch.setattr(batching, "limit_opencv_threads", lambda: calls.append(1))
    cfg = load_config(None, ["data.num_workers=2"])
    run = SimpleNamespace(
        cfg=cfg, dist_info=SimpleNamespace(rank=0, world_size=1), device=torch.device("cpu")
    )
    dataset = CocoDataset(shapes_paths["val_ann"], shapes_paths["val_images"])
    _, loader = TrainingRun._build_loader(run, dataset)  # type: ignore[arg-type]
    assert calls == [1] and loader.num_workers == 2
    assert loader.worker_init_fn is batching.limit_worker_threads
