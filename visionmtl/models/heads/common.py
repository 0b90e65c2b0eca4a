"""Small building blocks shared by the heads."""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor, nn


def conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv -> GroupNorm -> ReLU; GroupNorm keeps heads independent of batch size."""
    # Up to 32 groups of at least 2 channels (a 1-channel group cannot normalise a 1x1 map).
    groups = next(
        g
        for g in (32, 16, 8, 4, 2, 1)
        if out_channels % g == 0 and out_channels // g >= 2 or g == 1
    )
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


def mean_over_ranks(value: Tensor) -> Tensor:
    """Mean of a scalar tensor over the ranks of the default process group when torch.distributed
    is initialised (a collective: every rank must call it, in the same order), else ``value``.

    Loss normalisers (e.g. the number of positives) use it so that each rank divides by the same
    number, as the FCOS reference (reduce_sum / num_gpus) and MMDetection (reduce_mean): DDP's
    gradient average then weighs every image alike, as one batch of all ranks' images would."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    total = value.detach().clone()  # all_reduce works in place and outside autograd
    dist.all_reduce(total)
    return total / dist.get_world_size()
