"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-end multi-task learning with attention", CVPR 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from visionmtl.mtl.base import LossScaler, TaskBalancer, weighted_backward


class DynamicWeightAverage(TaskBalancer):
    """Weights from how fast each task's loss fell over the last two epochs.

    ``w_t = T * softmax_t(r_t / temperature)`` with ``r_t = L_t(e-1) / L_t(e-2)`` (epoch-mean losses fed to
    :meth:`end_epoch`); ``w_t = 1`` for the first two epochs. A task whose loss fell more slowly (larger
    ``r_t``) gets the larger weight. A task missing from either epoch, or with a zero/non-finite mean,
    gets ``r_t = 1``. One backward.

    Args:
        tasks: task names.
        temperature: softmax temperature (paper: 2); larger -> weights closer to 1.
    """

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if temperature <= 0:
            raise ValueError(f"DWA temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.history: list[dict[str, float]] = []  # the last two epochs' mean losses

    def current_weights(self) -> dict[str, float]:
        """task -> weight for the current epoch."""
        if len(self.history) < 2:
            return dict.fromkeys(self.tasks, 1.0)
        previous, last = self.history
        ratios = []
        for task in self.tasks:
            before, after = previous.get(task, math.nan), last.get(task, math.nan)
            ok = math.isfinite(before) and math.isfinite(after) and before > 0
            ratios.append(after / before if ok else 1.0)
        ratio = torch.tensor(ratios, dtype=torch.float64)
        weights = len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0)
        return dict(zip(self.tasks, weights.tolist(), strict=True))

    def backward(
        self, task_losses: dict[str, Tensor], shared: list[Tensor], scaler: LossScaler | None
    ) -> dict[str, float]:
        """One backward of ``scale(sum_t w_t L_t)``; ``shared`` is not used."""
        self.index(task_losses)
        weights = self.current_weights()
        used = {task: weights[task] for task in task_losses}
        weighted_backward(task_losses, used, scaler)
        return used

    def end_epoch(self, mean_task_losses: dict[str, float]) -> None:
        """Record the epoch's mean unweighted loss per task; sets the next epoch's weights."""
        self.history.append({task: float(mean_task_losses[task]) for task in mean_task_losses})
        self.history = self.history[-2:]

    def state_dict(self) -> dict:
        return {"tasks": list(self.tasks), "history": [dict(epoch) for epoch in self.history]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = [dict(epoch) for epoch in state["history"]]
