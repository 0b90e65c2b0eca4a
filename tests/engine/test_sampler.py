"""Tests for visionmtl/engine/sampler.py: aspect-ratio grouped batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionmtl.data import CocoDataset
from visionmtl.data.batching import orientation_groups
from visionmtl.engine.sampler import EpochSampler, group_batches


def _batches(sampler: EpochSampler) -> list[list[tuple[int, int]]]:
    samples = list(sampler)
    size = sampler.batch_size
    return [samples[i : i + size] for i in range(0, len(samples), size)]


@pytest.mark.parametrize("world_size", [1, 2])
def test_grouped_batches_hold_one_orientation_and_the_same_samples(world_size: int) -> None:
    groups = np.random.default_rng(0).integers(0, 2, 50).tolist()
    for rank in range(world_size):
        args = {"size": 50, "batch_size": 4, "seed": 3, "rank": rank, "world_size": world_size}
        plain, grouped = EpochSampler(**args), EpochSampler(**args, groups=groups)
        for epoch in (0, 1):
            plain.set_epoch(epoch)
            grouped.set_epoch(epoch)
            # Same samples with the same seeds, only reordered.
            assert sorted(plain) == sorted(grouped) and list(plain) != list(grouped)
            batches = _batches(grouped)
            mixed = [b for b in batches if len({groups[i] for i, _ in b}) > 1]
            assert len(mixed) <= 1 and (not mixed or mixed[0] is batches[-1])


def test_grouped_sampler_resumes_mid_epoch_exactly() -> None:
    groups = [i % 3 == 0 for i in range(40)]
    sampler = EpochSampler(40, 4, seed=1, groups=groups)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, start_batch=3)
    assert list(sampler) == whole[12:]


def test_group_batches_keeps_leftovers_in_order() -> None:
    items = [10, 11, 12, 13, 14, 15, 16]
    assert group_batches(items, [0, 1, 0, 1, 0, 0, 1], 2) == [10, 12, 11, 13, 14, 15, 16]
    with pytest.raises(ValueError, match="group ids"):
        EpochSampler(5, 2, groups=[0, 1])


def test_orientation_groups_from_json_sizes_and_from_file_headers(
    shapes_paths: dict[str, Path], tmp_path: Path
) -> None:
    square = CocoDataset(shapes_paths["val_ann"], shapes_paths["val_images"])
    assert orientation_groups(square) == [0] * len(square)  # width == height: not wider

    class Files:
        def __init__(self, paths: list[Path]) -> None:
            self.paths = paths

        def __len__(self) -> int:
            return len(self.paths)

        def image_info(self, index: int) -> dict:
            return {"path": self.paths[index]}

    paths = []
    for name, size in (("wide.png", (30, 20)), ("tall.png", (20, 30))):
        Image.new("RGB", size).save(tmp_path / name)
        paths.append(tmp_path / name)
    # An unreadable file is left to the data set's policy when it is loaded: group 0 here.
    assert orientation_groups(Files([*paths, tmp_path / "missing.png"])) == [1, 0, 0]
