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


def interaction_summary(weights: dict[str, float], stats: dict[str, float]) -> dict[str, str]:
    """Short progress-bar entries from a logging step: each task's weight (``w/det``), gradient
    norm (``|g|/det``) and the most conflicting pair's cosine (``cos_min``, with its pair)."""
    summary = {f"w/{task}": f"{weight:.2f}" for task, weight in weights.items()}
    for key, value in stats.items():
        if key.startswith("grad_norm/"):
            summary[f"|g|/{key.split('/', 1)[1]}"] = f"{value:.2g}"
    cosines = {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("grad_cos/")}
    finite = {pair: v for pair, v in cosines.items() if v == v}
    if finite:
        pair = min(finite, key=finite.__getitem__)
        summary["cos_min"] = f"{finite[pair]:+.2f} ({pair})"
    return summary
