"""Soft sharing: one FPN branch per task, joined by cross-stitch units (Misra et al. 2016).

Every task builds its own pyramid from the shared backbone maps; at each pyramid level ``l`` the
branches are mixed by a learned T x T matrix, task ``t`` reading ``sum_s alpha^l[t, s] * P_s^l``.
The matrices start near the identity (0.9 on the diagonal, the rest shared out), so each task
starts mostly from its own branch and learns how much to draw on the others: the learned weights
measure how much the tasks share.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionmtl.models.neck import PyramidNeck


class CrossStitchNeck(nn.Module):
    """Per-task pyramids over the shared backbone maps, mixed per level by cross-stitch units.

    Args:
        in_channels: channels of each backbone level (ascending stride).
        in_strides: strides of those levels.
        out_channels: channels of every pyramid level.
        tasks: task names, one branch each (the keys of the output).
        extra_levels: extra stride-2 levels of each branch (2 gives P6, P7), as in PyramidNeck.
        self_weight: initial diagonal of the mixing matrices; each row's other entries share
            ``1 - self_weight`` (with one task the single weight starts at 1: a plain FPN).
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        out_channels: int,
        tasks: list[str],
        extra_levels: int = 2,
        self_weight: float = 0.9,
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.branches = nn.ModuleDict(
            {
                task: PyramidNeck(in_channels, in_strides, out_channels, extra_levels)
                for task in self.tasks
            }
        )
        self.strides = self.branches[self.tasks[0]].strides
        self.out_channels = out_channels
        count = len(self.tasks)
        diagonal = self_weight if count > 1 else 1.0
        initial = torch.full((count, count), (1.0 - diagonal) / max(count - 1, 1))
        initial.fill_diagonal_(diagonal)
        # One matrix per level, rows: the task reading, columns: the branch it reads from.
        self.alphas = nn.ParameterList(nn.Parameter(initial.clone()) for _ in self.strides)

    def forward(self, features: list[Tensor]) -> dict[str, list[Tensor]]:
        """features: backbone maps (ascending stride) -> task -> its mixed pyramid maps
        [B, C, H/s, W/s] per stride."""
        pyramids = [self.branches[task](features) for task in self.tasks]
        mixed: list[list[Tensor]] = [[] for _ in self.tasks]
        for level, alpha in enumerate(self.alphas):
            stacked = torch.stack([pyramid[level] for pyramid in pyramids])  # [T, B, C, H, W]
            # The maps' dtype (bf16 under autocast, fp32 for P6/P7), not the weights'.
            level_maps = torch.einsum("ts,s...->t...", alpha.to(stacked.dtype), stacked)
            for task_maps, level_map in zip(mixed, level_maps, strict=True):
                task_maps.append(level_map)
        return dict(zip(self.tasks, mixed, strict=True))

    def mixing(self) -> dict[str, list[list[float]]]:
        """Level name (``P3`` for stride 8) -> its mixing matrix as floats, ``[t][s]`` the weight
        of branch ``s`` in task ``t``'s maps (rows and columns in ``tasks`` order)."""
        return {
            f"P{stride.bit_length() - 1}": alpha.detach().float().cpu().tolist()
            for stride, alpha in zip(self.strides, self.alphas, strict=True)
        }

    def describe_mixing(self) -> list[str]:
        """One line per level, e.g. ``cross-stitch P3: det<-[det 0.91 sem 0.09] sem<-[...]``."""
        lines = []
        for level, matrix in self.mixing().items():
            rows = []
            for task, weights in zip(self.tasks, matrix, strict=True):
                sources = " ".join(f"{s} {w:.2f}" for s, w in zip(self.tasks, weights, strict=True))
                rows.append(f"{task}<-[{sources}]")
            lines.append(f"cross-stitch {level}: {' '.join(rows)}")
        return lines
