"""Tests for visionmtl/data/transforms.py."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from visionmtl.data import MEAN, STD, Transform, build_transforms, normalize_image


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
