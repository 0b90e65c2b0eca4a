"""Fixed task weighting: total = sum over tasks of weight[task] * that task's loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from visionmtl.mtl.base import LossScaler, TaskBalancer, weighted_backward
from visionmtl.structures import group_by_task


class FixedWeighting(TaskBalancer):
    """Static per-task weights (default 1.0 for tasks not listed); one backward of the weighted sum.

    Args:
        tasks: task names (may be empty: any task is accepted and weighted 1.0 unless listed).
        weights: task name -> weight, e.g. ``{"det": 1.0, "sem": 0.5}``.

    ``FixedWeighting({"det": 2.0})`` (weights as the only positional argument, the pre-balancer API) is
    still accepted.
    """

    def __init__(
        self,
        tasks: Sequence[str] | Mapping[str, float] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if isinstance(tasks, Mapping):  # legacy call FixedWeighting(weights)
            tasks, weights = list(tasks), tasks
        super().__init__(list(tasks or []))
        self.weights = {task: float(value) for task, value in (weights or {}).items()}

    def weight(self, task: str) -> float:
        return float(self.weights.get(task, 1.0))

    def combine(self, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Named losses -> (weighted total, weight used per task)."""
        per_task = group_by_task(losses)
        used = {task: self.weight(task) for task in per_task}
        total = sum(used[task] * value for task, value in per_task.items())
        return total, used

    def backward(
        self, task_losses: dict[str, Tensor], shared: list[Tensor], scaler: LossScaler | None
    ) -> dict[str, float]:
        """One backward of ``scale(sum_t w_t L_t)``; ``shared`` is not used."""
        used = {task: self.weight(task) for task in task_losses}
        weighted_backward(task_losses, used, scaler)
        return used

    def state_dict(self) -> dict:
        return {"weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.weights = {task: float(value) for task, value in state["weights"].items()}
