"""Small building blocks shared by the heads."""

from __future__ import annotations

from torch import nn


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
