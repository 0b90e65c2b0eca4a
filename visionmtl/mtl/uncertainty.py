"""Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from visionmtl.mtl.base import LossScaler, TaskBalancer, active_losses, scale_loss


class UncertaintyWeighting(TaskBalancer):
    """Learned log-variances ``s_t = log sigma_t^2``: total = sum_t exp(-s_t) * L_t + s_t.

    The paper's 0.5 factors (regression) are dropped, as in most classification/segmentation uses: the
    optimum is ``exp(-s_t) = 1 / L_t`` for every task. A task without a loss graph in a batch (nothing
    labelled) adds neither term, so its ``s_t`` is not pulled down by the regulariser alone. The ``s_t``
    (initialised to 0, weight 1) are trained by the trainer's optimizer: add :meth:`parameters` to it
    (weight decay 0 recommended). One backward.

    Args:
        tasks: task names.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def to(self, device: torch.device | str) -> UncertaintyWeighting:
        self.log_vars.data = self.log_vars.data.to(
            device
        )  # same Parameter object: optimizers keep it
        return self

    def backward(
        self, task_losses: dict[str, Tensor], shared: list[Tensor], scaler: LossScaler | None
    ) -> dict[str, float]:
        """One backward of ``scale(sum_t exp(-s_t) L_t + s_t)``; returns ``exp(-s_t)`` per task."""
        self.index(task_losses)
        terms = []
        for task, loss in active_losses(task_losses).items():
            log_var = self.log_vars[self.tasks.index(task)].to(loss.device)
            terms.append(torch.exp(-log_var) * loss + log_var)
        if terms:
            scale_loss(torch.stack(terms).sum(), scaler).backward()
        weights = torch.exp(-self.log_vars.detach()).tolist()
        return {task: weights[self.tasks.index(task)] for task in task_losses}

    def state_dict(self) -> dict:
        return {"tasks": list(self.tasks), "log_vars": self.log_vars.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():  # in place: the optimizer holds this Parameter
            self.log_vars.copy_(state["log_vars"])
