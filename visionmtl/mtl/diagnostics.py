"""Per-task gradient statistics on the shared tensors, for logging how much the tasks conflict."""

from __future__ import annotations

import torch
from torch import Tensor

from visionmtl.mtl.base import active_losses, gram_matrix, task_gradients, trainable


def task_gradient_stats(
    task_losses: dict[str, Tensor], shared: list[Tensor], scale: float = 1.0
) -> dict[str, float]:
    """Gradient norm of each task on ``shared`` and the cosine similarity of each pair of tasks.

    Pass the losses as they will be backpropagated (already multiplied by ``scale`` under fp16 loss
    scaling, e.g. ``scaler.scale(loss)``): norms are divided by ``scale``. Uses ``autograd.grad`` with
    ``retain_graph=True`` and never touches ``.grad``, so call it before the balancer's backward.
    Tasks without a loss graph are left out.

    Returns a flat dict, e.g. ``{"grad_norm/det": 3.1, "grad_norm/sem": 0.7, "grad_cos/det|sem": -0.12}``
    (the cosine is nan when either gradient is zero)."""
    active = active_losses(task_losses)
    shared = trainable(shared)
    if not active or not shared:
        return {}
    gram = gram_matrix(task_gradients(active, shared, scaler=None))
    norms = gram.diagonal().clamp_min(0).sqrt()
    stats = {
        f"grad_norm/{task}": float(norm) / scale for task, norm in zip(active, norms, strict=True)
    }
    tasks = list(active)
    for i, first in enumerate(tasks):
        for j in range(i + 1, len(tasks)):
            denominator = norms[i] * norms[j]
            cosine = gram[i, j] / denominator if denominator > 0 else torch.tensor(float("nan"))
            stats[f"grad_cos/{first}|{tasks[j]}"] = float(cosine)
    return stats
