"""CAGrad: conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu, NeurIPS 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from visionmtl.mtl.base import LossScaler, TaskBalancer, surgery_backward


def conflict_averse_weights(
    gram: Tensor, c: float, steps: int = 50, step_size: float = 8.0
) -> Tensor:
    """Simplex weights ``w`` ``[T]`` minimising ``g_w . g0 + c |g0| |g_w|`` (``g_w = sum_t w_t g_t``,
    ``g0`` = mean gradient), by exponentiated-gradient descent on the Gram matrix ``[T, T]``.

    The Gram matrix is normalised first, so the result does not depend on the gradients' (loss) scale;
    with the defaults the objective is within ~0.2% of |g|^2 of the optimum for T <= 4."""
    num_tasks = gram.shape[0]
    gram = gram.double() / gram.diagonal().mean().clamp_min(1e-30)
    mean_weights = torch.full((num_tasks,), 1.0 / num_tasks, dtype=gram.dtype, device=gram.device)
    mean_norm = (mean_weights @ gram @ mean_weights).clamp_min(0).sqrt()
    weights = mean_weights.clone()
    for step in range(steps):
        norm_w = (weights @ gram @ weights).clamp_min(1e-12).sqrt()
        gradient = gram @ mean_weights + c * mean_norm * (gram @ weights) / norm_w
        weights = weights * torch.exp(-step_size * gradient / (1.0 + step) ** 0.5)
        weights = weights / weights.sum()
    return weights


def cagrad_coefficients(gram: Tensor, c: float, rescale: bool = True) -> Tensor:
    """Gram matrix ``[T, T]`` -> ``[T]`` coefficients of the update ``d = sum_t coef_t g_t``.

    ``d = T * (g0 + c |g0| / |g_w| g_w)``, divided by ``1 + c^2`` when ``rescale``: the paper's update,
    multiplied by T (as its reference code does) to match the scale of the summed losses that the
    task-specific parameters are trained with. ``c = 0`` gives the plain sum of gradients."""
    num_tasks = gram.shape[0]
    weights = conflict_averse_weights(gram, c)
    gram = gram.double()
    mean_weights = torch.full_like(weights, 1.0 / num_tasks)
    mean_norm = (mean_weights @ gram @ mean_weights).clamp_min(0).sqrt()
    norm_w = (weights @ gram @ weights).clamp_min(0).sqrt()
    step = c * mean_norm / (norm_w + 1e-12 * mean_norm + 1e-30)
    coefficients = num_tasks * (mean_weights + step * weights)
    return coefficients / (1.0 + c**2) if rescale else coefficients


class CAGrad(TaskBalancer):
    """Move along the mean gradient while maximising the worst task's improvement in a ball around it.

    Surgery is on the gradients of ``shared`` (parameters or feature maps, see :mod:`visionmtl.mtl.base`);
    task-specific parameters get their ordinary gradient. The weight reported per task is its
    coefficient in the combined gradient.

    Args:
        tasks: task names.
        c: radius of the ball, relative to |g0| (paper: 0.4-0.5; 0 = plain sum).
        rescale: divide the update by ``1 + c^2`` (the reference code's default).
    """

    def __init__(self, tasks: Sequence[str], c: float = 0.4, rescale: bool = True) -> None:
        super().__init__(tasks)
        if c < 0:
            raise ValueError(f"CAGrad c must be >= 0, got {c}")
        self.c = float(c)
        self.rescale = rescale

    def backward(
        self, task_losses: dict[str, Tensor], shared: list[Tensor], scaler: LossScaler | None
    ) -> dict[str, float]:
        return surgery_backward(
            self,
            task_losses,
            shared,
            scaler,
            lambda gram: cagrad_coefficients(gram, self.c, self.rescale),
        )
