"""Fixed task weighting: total = sum over tasks of weight[task] * sum of that task's losses."""

from __future__ import annotations

from torch import Tensor


def task_of(loss_name: str) -> str:
    """``"det/cls"`` -> ``"det"``: loss names start with their task."""
    return loss_name.split("/", 1)[0]


def group_by_task(losses: dict[str, Tensor]) -> dict[str, Tensor]:
    """Sum each task's named losses: {"det/cls": a, "det/box": b, "sem/ce": c} -> {"det": a+b, "sem": c}."""
    grouped: dict[str, Tensor] = {}
    for name, value in losses.items():
        task = task_of(name)
        grouped[task] = grouped[task] + value if task in grouped else value
    return grouped


class FixedWeighting:
    """Static per-task weights (default 1.0 for tasks not listed).

    Args:
        weights: task name -> weight, e.g. ``{"det": 1.0, "sem": 0.5}``.
    """

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = dict(weights or {})

    def combine(self, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Named losses -> (weighted total, weight used per task)."""
        per_task = group_by_task(losses)
        used = {task: float(self.weights.get(task, 1.0)) for task in per_task}
        total = sum(used[task] * value for task, value in per_task.items())
        return total, used

    def state_dict(self) -> dict:
        return {"weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.weights = dict(state["weights"])
