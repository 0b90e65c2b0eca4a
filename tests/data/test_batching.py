"""Tests for visionmtl/data/batching.py."""

from __future__ import annotations

import pickle

import torch

from visionmtl.data import Collator


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
