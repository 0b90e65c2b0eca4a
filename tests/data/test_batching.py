"""Tests for visionmtl/data/batching.py."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from visionmtl.data import Collator, build_transforms
from visionmtl.data.batching import DeviceInput


def _sample(height: int, width: int, num: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    target = {
        "boxes": torch.zeros(num, 4),
        "labels": torch.zeros(num, dtype=torch.int64),
        "masks": torch.ones(num, height, width, dtype=torch.uint8),
        "sem_seg": torch.ones(height, width, dtype=torch.int64),
        "image_size": torch.tensor([height, width]),
    }
    return torch.ones(3, height, width), target


def test_pads_to_multiple_with_right_values() -> None:
    collate = pickle.loads(pickle.dumps(Collator(size_divisor=32)))
    images, targets = collate([_sample(50, 70, 2), _sample(33, 64, 0)])
    assert images.shape == (2, 3, 64, 96)
    assert images[0, :, :50, :70].eq(1).all() and images[0, :, 50:].eq(0).all()
    assert images[1, :, :, 64:].eq(0).all() and images[1, :, 33:].eq(0).all()
    first, second = targets
    assert first["masks"].shape == (2, 64, 96) and first["masks"].dtype == torch.uint8
    assert first["masks"][:, :50, :70].eq(1).all() and first["masks"][:, 50:].eq(0).all()
    assert first["sem_seg"].shape == (64, 96) and first["sem_seg"][:, 70:].eq(255).all()
    assert first["sem_seg"][:50, :70].eq(1).all()
    assert second["masks"].shape == (0, 64, 96) and second["sem_seg"][33:].eq(255).all()
    assert first["image_size"].tolist() == [50, 70] and first["boxes"].shape == (2, 4)


def test_exact_multiple_and_inference_targets() -> None:
    images, targets = Collator(16)([(torch.ones(3, 32, 48), {}), (torch.ones(3, 16, 16), {})])
    assert images.shape == (2, 3, 32, 48)
    assert targets == [{}, {}]


def test_worker_init_limits_opencv_to_one_thread() -> None:
    import cv2

    from visionmtl.data.batching import limit_worker_threads

    saved = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        limit_worker_threads(0)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(saved)


def _pair(transform_kwargs: dict, compact: bool, seed: int) -> list:
    """Two augmented samples of different sizes through one training transform."""
    rng = np.random.default_rng(seed)
    transform = build_transforms(64, train=True, compact=compact, **transform_kwargs)
    torch.manual_seed(seed)  # the same augmentation draws for the compact and the float run
    samples = []
    for height, width in ((40, 64), (64, 30)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        sem = rng.integers(0, 4, (height, width)).astype(np.uint8)
        sem[0] = 255
        out = transform(image, sem_seg=sem)
        target = {"sem_seg": out["sem_seg"], "image_size": torch.tensor(out["image"].shape[-2:])}
        samples.append((out["image"], target))
    return samples


def test_device_input_matches_the_float_pipeline() -> None:
    """uint8 out of the workers, normalised by DeviceInput: the same batch as normalising in the
    workers, padding included (0 after normalisation, not the normalised black)."""
    kwargs = {"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3)}
    compact, plain = _pair(kwargs, True, 3), _pair(kwargs, False, 3)
    assert compact[0][0].dtype == torch.uint8 and compact[0][1]["sem_seg"].dtype == torch.uint8
    assert plain[0][0].dtype == torch.float32 and plain[0][1]["sem_seg"].dtype == torch.int64
    collate = Collator(size_divisor=32)
    images, targets = DeviceInput(kwargs["mean"], kwargs["std"], torch.device("cpu"))(
        *collate(compact)
    )
    expected, expected_targets = collate(plain)
    assert images.dtype == torch.float32 and images.shape == expected.shape
    assert torch.equal(images, expected)  # the same float32 operations: bit for bit
    for got, want in zip(targets, expected_targets, strict=True):
        assert torch.equal(got["sem_seg"].long(), want["sem_seg"])  # 255 padding and ignore kept


def test_device_input_passes_float_images_and_sets_the_layout() -> None:
    images, targets = Collator()([_sample(50, 70, 1)])
    moved, _ = DeviceInput((0.5,) * 3, (0.5,) * 3, torch.device("cpu"), channels_last=True)(
        images, targets
    )
    assert torch.equal(moved, images)  # already normalised: untouched
    assert moved.is_contiguous(memory_format=torch.channels_last)
    compact = images.to(torch.uint8)
    del targets[0]["image_size"]
    with pytest.raises(ValueError, match="image_size"):
        DeviceInput((0.5,) * 3, (0.5,) * 3, torch.device("cpu"))(compact, targets)
