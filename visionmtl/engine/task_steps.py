"""What one training step does per task: which tasks a batch labels (partial labels), and the
step record of how the tasks interact (loss, weight, gradient norm, cosines) for the loggers."""

from __future__ import annotations

from typing import Any

import torch

from visionmtl.mtl import task_gradient_stats


def labelled_only(
    task_losses: dict[str, torch.Tensor], labelled: set[str]
) -> dict[str, torch.Tensor]:
    """The losses of labelled tasks, for the balancer: an unlabelled task's loss is an exact zero
    that must not move learned weights or loss statistics. Its graph is kept (added, as 0, to a
    labelled task's loss) so DDP still sees every head parameter take part."""
    active = {task: loss for task, loss in task_losses.items() if task in labelled}
    if not active or len(active) == len(task_losses):
        return task_losses
    first = next(iter(active))
    for task, loss in task_losses.items():
        if task not in labelled:
            active[first] = active[first] + 0.0 * loss
    return active


def gradient_stats(
    task_losses: dict[str, torch.Tensor], shared: list[torch.Tensor], scaler: Any
) -> dict[str, float]:
    """Per-task gradient norms on the shared parameters and pairwise cosines (T extra backwards)."""
    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
    scaled = {task: scaler.scale(loss) for task, loss in task_losses.items()}
    return task_gradient_stats(scaled, shared, scale=scale)


def interaction_record(
    step: int,
    lr: float,
    task_losses: dict[str, torch.Tensor],
    weights: dict[str, float],
    grad_stats: dict[str, float],
) -> dict[str, Any]:
    """The step record of how the tasks interact at ``step`` (``RunLogger.log_step``): the lr,
    each task's loss, weight and gradient norm, the pairwise gradient cosines."""
    record: dict[str, Any] = {"step": step, "lr": lr}
    record.update({f"loss/{task}": round(float(v.detach()), 5) for task, v in task_losses.items()})
    record.update({f"weight/{task}": round(w, 5) for task, w in weights.items()})
    record.update({k: round(v, 5) for k, v in grad_stats.items()})
    return record
