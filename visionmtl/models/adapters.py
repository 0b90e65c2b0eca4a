"""Soft sharing: task-specific residual adapters on the shared pyramid.

Each task sees ``P + A_t(P)`` instead of the shared map ``P``, where ``A_t`` is a small
bottleneck (3x3 conv -> ReLU -> 1x1 conv) per pyramid level (Rebuffi et al. 2017, residual
adapters). The last conv starts at zero, so training starts from hard sharing and each task
learns only the correction it needs; gradient methods treat adapters as task-specific.
"""

from __future__ import annotations

from torch import Tensor, nn


class TaskAdapters(nn.Module):
    """Residual adapters for one task, one per pyramid level it reads.

    Args:
        channels: pyramid channels.
        num_levels: levels the task's head reads.
        reduction: bottleneck width = channels // reduction.
    """

    def __init__(self, channels: int, num_levels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.levels = nn.ModuleList()
        for _ in range(num_levels):
            expand = nn.Conv2d(hidden, channels, 1)
            nn.init.zeros_(expand.weight)
            nn.init.zeros_(expand.bias)
            self.levels.append(
                nn.Sequential(
                    nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True), expand
                )
            )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """features: the task's pyramid maps [B, C, H_l, W_l] -> adapted maps of the same shapes."""
        return [
            feature + adapter(feature)
            for feature, adapter in zip(features, self.levels, strict=True)
        ]
