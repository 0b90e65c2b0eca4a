"""PCGrad: gradient surgery for multi-task learning (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from visionmtl.mtl.base import LossScaler, TaskBalancer, surgery_backward


def project_conflicting(gram: Tensor) -> Tensor:
    """Gram matrix ``[T, T]`` of task gradients -> coefficients ``[T, T]``: ``g'_i = sum_k C[i, k] g_k``.

    For each task i, against every other task j in a random order (``torch.randperm``: deterministic given
    torch's RNG), ``g'_i -= (g'_i . g_j) / |g_j|^2 g_j`` when ``g'_i . g_j < 0``. Works in coefficient space,
    so it costs O(T^3) on the Gram matrix instead of O(T^2) passes over the gradients."""
    num_tasks = gram.shape[0]
    coefficients = torch.eye(num_tasks, dtype=gram.dtype, device=gram.device)
    for i in range(num_tasks):
        for j in torch.randperm(num_tasks).tolist():
            if j == i:
                continue
            dot = coefficients[i] @ gram[:, j]  # g'_i . g_j
            if dot < 0:
                coefficients[i, j] -= dot / gram[j, j]
    return coefficients


class PCGrad(TaskBalancer):
    """Project each task's gradient off the gradients it conflicts with, then sum.

    Surgery is on the gradients of ``shared`` (parameters or feature maps, see :mod:`visionmtl.mtl.base`);
    task-specific parameters get their ordinary gradient. The weight reported per task is the coefficient
    of its own gradient in the combined gradient (1.0 each when nothing conflicts).

    Args:
        tasks: task names.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)

    def backward(
        self, task_losses: dict[str, Tensor], shared: list[Tensor], scaler: LossScaler | None
    ) -> dict[str, float]:
        return surgery_backward(
            self, task_losses, shared, scaler, lambda gram: project_conflicting(gram).sum(dim=0)
        )
