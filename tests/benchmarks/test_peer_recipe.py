"""The peer's reference recipe: its values, the optimizer and lr schedule it builds, and the
aspect-ratio grouped batches."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import SequentialSampler

from benchmarks.peer_recipe import (
    GroupedBatchSampler,
    PeerRecipe,
    aspect_ratio_groups,
    build_peer_optimizer,
    build_peer_scheduler,
)


def test_recipe_defaults_are_the_references_at_batch_2() -> None:
    recipe = PeerRecipe()
    assert recipe.lr == pytest.approx(0.0025)  # 0.02 per 16 images, at batch 2
    assert (recipe.epochs, recipe.batch_size) == (12, 2)
    assert (recipe.min_size, recipe.max_size) == (480, 800)
    assert (recipe.momentum, recipe.weight_decay) == (0.9, 1e-4)
    assert (recipe.hflip_prob, recipe.clip_grad_norm) == (0.5, 10.0)
    assert (recipe.trainable_backbone_layers, recipe.aspect_ratio_group_factor) == (3, 3)
    assert PeerRecipe(batch_size=4).lr == pytest.approx(0.005)  # linear in the batch
    # warm-up: min(1000, iterations per epoch - 1); Penn-Fudan has 96 images, 48 batches
    assert recipe.warmup_iters(48) == 47 and recipe.warmup_iters(5000) == 1000
    assert recipe.to_dict()["lr"] == recipe.lr and recipe.to_dict()["epochs"] == 12
    assert "0.0025" in recipe.describe() and "480" in recipe.describe()
    with pytest.raises(AttributeError):
        recipe.epochs = 1  # type: ignore[misc]


def test_optimizer_and_schedule_follow_the_recipe() -> None:
    recipe = PeerRecipe()
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)  # frozen parameters are not optimised
    optimizer = build_peer_optimizer(model, recipe)
    assert isinstance(optimizer, torch.optim.SGD) and len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert group["params"] == list(model[1].parameters())
    assert group["lr"] == pytest.approx(0.0025)
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.9, 1e-4, False)

    iters_per_epoch, total = 48, 48 * recipe.epochs
    scheduler = build_peer_scheduler(optimizer, recipe, iters_per_epoch, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(0.0025 * 0.001)  # the references' warmup_factor
    assert peak == 47 and lrs[peak] == pytest.approx(0.0025)  # warm-up over the first epoch
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))
    assert lrs[peak + (total - peak) // 2] == pytest.approx(0.0025 / 2, rel=1e-2)  # cosine
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # 0 after the run


class _Sizes:
    """A stand-in for CocoDataset's ``image_info`` (width, height from the JSON)."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def image_info(self, index: int) -> dict[str, Any]:
        width, height = self.sizes[index]
        return {"width": width, "height": height}


def test_aspect_ratio_groups_use_the_references_bins() -> None:
    # k = 3: edges 2 ** linspace(-1, 1, 7) = 0.5, 0.63, 0.79, 1, 1.26, 1.59, 2
    sizes = [(100, 300), (100, 100), (120, 100), (300, 100), (90, 100), (160, 100)]
    assert aspect_ratio_groups(_Sizes(sizes), 3) == [0, 4, 4, 7, 3, 6]
    assert aspect_ratio_groups(_Sizes(sizes), 0) == [0, 1, 1, 1, 0, 1]  # only the edge 1.0


def test_grouped_batches_share_a_group_and_keep_the_count() -> None:
    groups = [0, 1, 0, 1, 1, 0, 2, 2, 1, 0]
    sampler = GroupedBatchSampler(SequentialSampler(range(len(groups))), groups, batch_size=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(groups) // 2
    assert batches == [[0, 2], [1, 3], [6, 7], [4, 8], [5, 9]]  # in the order they fill up
    # leftovers: the fullest unfinished group is completed with repeats of its own images
    groups = [0, 1, 0, 2, 1, 0]
    batches = list(GroupedBatchSampler(SequentialSampler(range(6)), groups, batch_size=3))
    assert batches == [[0, 2, 5], [1, 4, 1]]
