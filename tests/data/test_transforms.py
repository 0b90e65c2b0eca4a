"""Tests for visionmtl/data/transforms.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from visionmtl.data import MEAN, STD, CocoDataset, Transform, build_transforms, normalize_image
from visionmtl.data.rasterize import Segment, Shapes


def _scene(height: int = 60, width: int = 90) -> tuple[np.ndarray, ...]:
    """An image with three rectangles: boxes [3, 4], labels [3], masks [3, H, W], sem_seg [H, W]."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 40, 30], [30, 20, 85, 55], [60, 2, 70, 12]], np.float32)
    masks = np.zeros((3, height, width), np.uint8)
    sem_seg = np.zeros((height, width), np.int64)
    for index, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        masks[index, y0:y1, x0:x1] = 1
        sem_seg[y0:y1, x0:x1] = index + 1
    return image, boxes, np.array([0, 2, 1]), masks, sem_seg


def _mask_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_normalize_image() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 0] = 255
    tensor = normalize_image(image)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    expected = [(1 - m) / s for m, s in zip(MEAN, STD, strict=True)]
    torch.testing.assert_close(tensor[:, 0, 0], torch.tensor(expected))
    torch.testing.assert_close(
        tensor[:, 1, 1], torch.tensor([-m / s for m, s in zip(MEAN, STD, strict=True)])
    )


@pytest.mark.parametrize(("size", "expected_hw"), [(45, (30, 45)), (180, (120, 180))])
def test_eval_resizes_longer_side(size: int, expected_hw: tuple[int, int]) -> None:
    image, boxes, labels, masks, sem_seg = _scene()
    out = build_transforms(size, train=False)(image, boxes, labels, masks, sem_seg)
    assert out["image"].shape == (3, *expected_hw)
    assert out["masks"].shape == (3, *expected_hw) and out["masks"].dtype == torch.uint8
    assert out["sem_seg"].shape == expected_hw and out["sem_seg"].dtype == torch.int64
    assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, 3}  # nearest: no blended labels
    scale = expected_hw[1] / 90
    torch.testing.assert_close(out["boxes"], torch.from_numpy(boxes) * scale)
    assert out["labels"].tolist() == [0, 2, 1]


def test_image_only_call() -> None:
    out = build_transforms(30, train=True)(_scene()[0])
    assert set(out) == {"image"} and max(out["image"].shape[1:]) <= 38


@pytest.mark.parametrize("seed", range(6))
def test_train_boxes_follow_masks(seed: int) -> None:
    torch.manual_seed(seed)
    transform = build_transforms(90, train=True, scale_range=(0.5, 1.5))
    image, boxes, labels, masks, sem_seg = _scene()
    out = transform(image, boxes, labels, masks, sem_seg)
    height, width = out["image"].shape[1:]
    assert 0.5 * 90 - 1 <= max(height, width) <= 1.5 * 90 + 1
    assert out["masks"].shape[1:] == out["sem_seg"].shape == (height, width)
    assert len(out["boxes"]) == len(out["labels"]) == len(out["masks"])
    for box, mask in zip(out["boxes"], out["masks"], strict=True):
        assert torch.allclose(torch.tensor(_mask_box(mask), dtype=torch.float32), box, atol=2.0)
        assert (out["sem_seg"][mask > 0] > 0).all()


def test_train_flip_is_exact_and_seeded() -> None:
    image, boxes, labels, masks, sem_seg = _scene()
    transform = build_transforms(
        90, train=True, scale_range=(1.0, 1.0), hflip_prob=1.0, color_jitter=0.0
    )
    out = transform(image, boxes, labels, masks, sem_seg)
    plain = build_transforms(90, train=False)(image[:, ::-1].copy())
    torch.testing.assert_close(out["image"], plain["image"])
    torch.testing.assert_close(out["boxes"][0], torch.tensor([50.0, 5.0, 85.0, 30.0]))
    jitter = build_transforms(64, train=True)
    clone = pickle.loads(pickle.dumps(jitter))
    torch.manual_seed(3)
    first = jitter(image, boxes, labels, masks, sem_seg)
    torch.manual_seed(3)
    second = clone(image, boxes, labels, masks, sem_seg)
    torch.testing.assert_close(first["image"], second["image"])
    torch.testing.assert_close(first["boxes"], second["boxes"])


def test_degenerate_boxes_dropped_with_labels_and_masks() -> None:
    image, _, _, _, _ = _scene()
    boxes = np.array([[10, 10, 50, 40], [20, 30, 80, 31.2]], np.float32)  # second is 1.2 px tall
    masks = np.zeros((2, 60, 90), np.uint8)
    masks[0, 10:40, 10:50] = 1
    masks[1, 30, 20:80] = 1
    out = build_transforms(45, train=False)(image, boxes, np.array([1, 0]), masks)
    assert out["labels"].tolist() == [1]
    assert out["boxes"].shape == (1, 4) and out["masks"].shape == (1, 30, 45)
    assert out["masks"][0].sum() > 200
    empty = build_transforms(45, train=True)(
        image, np.zeros((0, 4)), np.zeros(0), np.zeros((0, 60, 90), np.uint8)
    )
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, *empty["image"].shape[1:])


def test_own_mean_and_std_in_every_path() -> None:
    """Backbones declare their own statistics (0.5 / 0.5 for Inception-style weights)."""
    image = np.zeros((2, 4, 3), np.uint8)
    image[0, 0] = 255
    half = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    torch.testing.assert_close(normalize_image(image, **half)[:, 0, 0], torch.ones(3))
    torch.testing.assert_close(normalize_image(image, **half)[:, 1, 1], -torch.ones(3))
    for transform in (
        build_transforms(4, train=False, **half),  # resize path
        pickle.loads(pickle.dumps(build_transforms(4, train=False, **half))),
        Transform(None, train=False, **half),  # normalise-only path
    ):
        out = transform(image)["image"]
        torch.testing.assert_close(out[:, 0, 0], torch.ones(3))
        torch.testing.assert_close(out[:, 1, 1], -torch.ones(3))
    # The default stays ImageNet's, bit for bit.
    assert torch.equal(build_transforms(4, train=False)(image)["image"], normalize_image(image))
    with pytest.raises(ValueError, match="std > 0"):
        build_transforms(4, train=False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.0, 0.5))


def test_importing_the_data_pipeline_opens_no_network_connection() -> None:
    """albumentations checks PyPI for updates on import unless told not to; visionmtl tells it
    (nothing may reach the network at run time)."""
    import subprocess
    import sys

    probe = (
        "import socket\n"
        "def refuse(self, address):\n"
        "    raise SystemExit(f'network connection to {address}')\n"
        "socket.socket.connect = refuse\n"
        "import visionmtl.data, visionmtl.engine.rundir\n"
        "import albumentations\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


def test_train_resizes_each_array_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scale jitter is part of the one resize: image, each mask and the semantic map are
    resized once per sample (not to image_size and then rescaled)."""
    import cv2

    calls = []
    resize = cv2.resize

    def counting(array, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(array.shape[:2])
        return resize(array, *args, **kwargs)

    monkeypatch.setattr(cv2, "resize", counting)
    # 60: the scene is 60 x 90, so a resize to image_size alone would not be a no-op
    transform = build_transforms(60, train=True, scale_range=(0.5, 1.5), color_jitter=0.0)
    sides = set()
    for seed in range(20):
        torch.manual_seed(seed)
        calls.clear()
        out = transform(*_scene())
        assert len(calls) == 1 + 3 + 1  # image, 3 masks, sem_seg
        sides.add(max(out["image"].shape[1:]))
    assert min(sides) >= 30 and max(sides) <= 90 and len(sides) >= 10  # jittered, in range


def _shapes_scene() -> tuple[np.ndarray, np.ndarray, Shapes]:
    """A 60x90 image with two polygon instances (an L-shape, not mirror-symmetric, and a
    triangle) and a crowd RLE: image, boxes [2, 4], their Shapes."""
    image = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    l_shape = [10, 10, 40, 10, 40, 20, 20, 20, 20, 50, 10, 50]
    triangle = [50, 40, 80, 40, 50, 55]
    crowd = np.zeros((60, 90), np.uint8)
    crowd[0:5, 80:90] = 1
    segments = [Segment([l_shape], 60, 90), Segment([triangle], 60, 90)]
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    shapes = Shapes(60, 90, segments, np.array([3, 5]), [Segment(crowd_rle, 60, 90)])
    boxes = np.array([[10, 10, 40, 50], [50, 40, 80, 55]], np.float32)
    return image, boxes, shapes


def test_shapes_are_drawn_at_the_output_size_and_follow_the_flip() -> None:
    image, boxes, shapes = _shapes_scene()
    transform = Transform(180, train=True, scale_range=(1.0, 1.0), hflip_prob=0.5, color_jitter=0)
    outputs = {}
    for seed in range(12):  # both outcomes of the coin
        torch.manual_seed(seed)
        out = transform(image, boxes=boxes, labels=np.array([0, 1]), shapes=shapes)
        flipped = bool(out["boxes"][0, 0] > 90)
        outputs[flipped] = out
    assert set(outputs) == {False, True}
    plain, mirrored = outputs[False], outputs[True]
    assert plain["sem_seg"].shape == (120, 180) and "masks" not in plain
    # drawn at twice the size: the L's arm and the crowd corner, ids painted, background 0
    assert (
        plain["sem_seg"][20:40, 20:80].eq(3).all() and plain["sem_seg"][60:100, 20:40].eq(3).all()
    )
    assert (
        plain["sem_seg"][60:100, 41:80].eq(0).all() and plain["sem_seg"][0:10, 160:].eq(255).all()
    )
    assert plain["sem_seg"][82, 102] == 5
    assert torch.equal(mirrored["sem_seg"], plain["sem_seg"].flip(-1))
    assert torch.equal(mirrored["mask_crops"], plain["mask_crops"].flip(-1))
    regions = plain["mask_regions"]  # the boxes, at twice the size, with one cell of 62 per side
    cells = (plain["boxes"][:, 2:] - plain["boxes"][:, :2]) / 62
    expected = torch.cat([plain["boxes"][:, :2] - cells, plain["boxes"][:, 2:] + cells], 1)
    torch.testing.assert_close(regions, expected)
    torch.testing.assert_close(plain["boxes"], torch.from_numpy(boxes) * 2)
    np.testing.assert_allclose(
        mirrored["mask_regions"].numpy(),
        torch.stack([180 - regions[:, 2], regions[:, 1], 180 - regions[:, 0], regions[:, 3]], 1),
        atol=1e-4,
    )
    # each crop's inner cells hold the shape over its box: the L's top-left cell is filled, its
    # bottom-right (outside the L) empty; the outer ring of cells is the margin
    crop = plain["mask_crops"][0]
    assert crop.shape == (64, 64) and crop[1, 1] == 1 and crop[-2, -2] == 0
    assert crop[0].eq(0).all() and crop[:, -1].eq(0).all()


def test_an_instance_too_small_to_train_on_keeps_its_class_in_the_semantic_map() -> None:
    """A 160 x 3.6 px wire in a 200 x 200 image shrunk to 50 px: its box falls under 1 px tall and
    is dropped with its crop, but the row of pixels it covers stays its class in the semantic map
    (not background)."""
    image = np.zeros((200, 200, 3), np.uint8)
    wire = [20, 40.2, 180, 40.2, 180, 43.8, 20, 43.8]  # covers the centres of output row 10
    shapes = Shapes(200, 200, [Segment([wire], 200, 200)], np.array([9]))
    box = np.array([[20, 40.2, 180, 43.8]], np.float32)
    out = Transform(50, train=False)(image, boxes=box, labels=np.array([0]), shapes=shapes)
    assert out["boxes"].shape == (0, 4) and out["mask_crops"].shape == (0, 64, 64)
    assert out["sem_seg"][10, 5:45].eq(9).all() and (out["sem_seg"] == 9).sum() == 40


def test_semantic_values_must_fit_the_map() -> None:
    with pytest.raises(ValueError, match="0..255"):
        Shapes(10, 10, [Segment([[1, 1, 5, 1, 5, 5]], 10, 10)], np.array([300]))


def test_shapes_need_boxes_and_replace_masks() -> None:
    image, boxes, shapes = _shapes_scene()
    with pytest.raises(ValueError, match="shapes replace masks"):
        Transform(None, train=False)(image, shapes=shapes)
    with pytest.raises(ValueError, match="shapes replace masks"):
        Transform(None, train=False)(image, boxes=boxes, sem_seg=np.zeros((60, 90)), shapes=shapes)


def test_polygons_are_not_decoded_at_full_size_in_training(
    shapes_paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per sample, polygon work is bounded by the boxes (crops and box regions of the semantic map),
    not instances x image pixels: nothing asks for a full-size mask."""

    def full_size(*args: object) -> None:
        raise AssertionError("a full-size mask was decoded")

    monkeypatch.setattr(Segment, "full", full_size)
    transform = build_transforms(96, train=True, compact=True)
    dataset = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"], transform)
    _, target = dataset[0]
    assert len(target["mask_crops"]) > 0 and target["sem_seg"].dtype == torch.uint8
    with pytest.raises(AssertionError, match="full-size"):
        dataset.original_instances(0)  # evaluation's ground truth is full size, on purpose
