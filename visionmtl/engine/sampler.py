"""Resumable, rank-aware sampling with per-sample augmentation seeds.

Bit-exact resume needs every random choice to be a function of (seed, epoch, position) rather
than of how far some process's random stream has advanced: the sampler derives the epoch's
permutation and one seed per sample from them, and the dataset wrapper re-seeds the augmentation
before each sample. The result is the same whatever the number of workers, ranks or interruptions.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(dataset_index, sample_seed)`` for one rank's share of an epoch.

    Not torch's ``DistributedSampler``, which shares the rank split (the permutation padded by
    wrapping, every ``world_size``-th index from ``rank``) but lacks what resuming needs: it
    yields bare indices (no per-sample seed for :class:`SeededDataset`), cannot start at a batch
    inside the epoch (only iterating and discarding the skipped samples would), its ``drop_last``
    trims to a multiple of ``world_size`` rather than of the batch size, and it seeds with
    ``seed + epoch``, so seed 1 at epoch 0 repeats seed 0 at epoch 1 (here
    ``seed * 1_000_003 + epoch``).

    Args:
        size: number of samples in the data set.
        batch_size: samples per batch on each rank (for :meth:`skip_batches`).
        seed: base seed; the epoch's permutation is ``randperm(size)`` seeded with (seed, epoch).
        shuffle: permute each epoch (training) or keep order.
        rank, world_size: this process's share: every ``world_size``-th sample from ``rank``;
            the permutation is padded by wrapping so all ranks get the same count.
        drop_last: drop the last incomplete batch of each rank.
        groups: a group id per sample (e.g. :func:`~visionmtl.data.batching.orientation_groups`):
            each rank's samples are reordered so that every batch holds one group (less padding),
            as torchvision's ``GroupedBatchSampler``; the few samples left over when a group's
            count is not a multiple of ``batch_size`` form the epoch's last, mixed batches. The
            order stays a function of (seed, epoch, rank), so resuming is still exact.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        groups: Sequence[int] | None = None,
    ) -> None:
        if groups is not None and len(groups) != size:
            raise ValueError(f"{len(groups)} group ids for {size} samples")
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and, to resume mid-epoch, the first batch to yield."""
        self.epoch = epoch
        self.start_batch = start_batch

    def _per_rank(self) -> int:
        per_rank = -(-self.size // self.world_size)  # ceil: wrap-pad so ranks stay in step
        if self.drop_last and per_rank >= self.batch_size:
            per_rank -= per_rank % self.batch_size
        return per_rank

    def batches_per_epoch(self) -> int:
        return -(-self._per_rank() // self.batch_size)

    def __len__(self) -> int:
        return max(self._per_rank() - self.start_batch * self.batch_size, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = (
            torch.randperm(self.size, generator=generator)
            if self.shuffle
            else torch.arange(self.size)
        )
        seeds = torch.randint(0, 2**31 - 1, (self.size,), generator=generator)
        total = self._per_rank() * self.world_size
        order = order.repeat(-(-total // self.size))[:total] if total > self.size else order[:total]
        mine = order[self.rank :: self.world_size][: self._per_rank()].tolist()
        # Each sample keeps the seed of its place in the permutation, grouped or not.
        positions = torch.arange(len(mine))
        mine_seeds = seeds[(self.rank + positions * self.world_size) % self.size].tolist()
        places = list(range(len(mine)))
        if self.groups is not None:
            places = group_batches(places, self.groups[mine].tolist(), self.batch_size)
        for place in places[self.start_batch * self.batch_size :]:
            yield mine[place], mine_seeds[place]


def group_batches(items: list[int], groups: list[int], batch_size: int) -> list[int]:
    """``items`` reordered so that each run of ``batch_size`` shares one of ``groups`` (one id
    per item): a batch is emitted when its group has ``batch_size`` items, in order of completion;
    the remainders of all groups follow, in their original order."""
    pending: dict[int, list[int]] = {}
    ordered: list[int] = []
    for place, group in enumerate(groups):
        pending.setdefault(group, []).append(place)
        if len(pending[group]) == batch_size:
            ordered += pending.pop(group)
    ordered += sorted(place for rest in pending.values() for place in rest)
    return [items[place] for place in ordered]


class SeededDataset(Dataset):
    """Wraps a data set so that ``dataset[(index, seed)]`` seeds python, numpy and torch with
    ``seed`` before loading sample ``index`` (augmentations follow ``torch.initial_seed()``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]):  # type: ignore[no-untyped-def]
        index, seed = item
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return self.dataset[index]
