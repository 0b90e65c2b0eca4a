"""Feature pyramid P3-P7 on top of the backbone levels (torchvision's FPN)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


class Float32P6P7(LastLevelP6P7):
    """torchvision's P6/P7 block, always run in float32.

    The maps are tiny (stride 64 and 128), so this costs nothing, and it avoids a CPU bf16 autocast
    fault in PyTorch 2.14: the weight gradient of a stride-2 3x3 conv on a 1x1 map is sometimes
    non-finite (seen on P7 of 64-128 px images)."""

    def forward(
        self, p: list[torch.Tensor], c: list[torch.Tensor], names: list[str]
    ) -> tuple[list[torch.Tensor], list[str]]:
        with torch.autocast(device_type=p[-1].device.type, enabled=False):
            return super().forward([x.float() for x in p], [x.float() for x in c], names)


class PyramidNeck(nn.Module):
    """FPN over the backbone levels plus extra stride-2 levels (P6, P7 for RetinaNet/FCOS).

    Args:
        in_channels: channels of each backbone level (ascending stride).
        in_strides: strides of those levels.
        out_channels: channels of every pyramid level.
        extra_levels: number of extra levels computed from the last one (2 gives P6, P7).
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        out_channels: int,
        extra_levels: int = 2,
    ) -> None:
        super().__init__()
        extra = Float32P6P7(out_channels, out_channels) if extra_levels == 2 else None
        if extra_levels not in (0, 2):
            raise ValueError("extra_levels must be 0 or 2")
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra)
        last = in_strides[-1]
        self.strides = list(in_strides) + [last * 2**k for k in range(1, extra_levels + 1)]
        self.out_channels = out_channels

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """features: backbone maps (ascending stride) -> pyramid maps [B, C, H/s, W/s] per stride."""
        named = OrderedDict((str(i), f) for i, f in enumerate(features))
        return list(self.fpn(named).values())
