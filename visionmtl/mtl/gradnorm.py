"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from visionmtl.mtl.base import (
    LossScaler,
    TaskBalancer,
    active_losses,
    loss_scale,
    scale_loss,
    trainable,
    weighted_backward,
)


class GradNorm(TaskBalancer):
    """Learned task weights that equalise the tasks' gradient norms on the shared tensors.

    Each step: the network backward uses the current weights ``w_t`` (sum T). Then, with
    ``G_t = w_t * ||grad_shared L_t||`` and the relative inverse training rate
    ``r_t = (L_t / L_t(0)) / mean_j(L_j / L_j(0))`` (``L_t(0)``: the task's first loss), the weights take one
    Adam step (lr ``lr``) on ``sum_t |G_t - mean(G) * r_t^alpha|`` (the target held constant), are clipped
    positive and renormalised to sum T. ``||grad L_t||`` is computed once per task without
    ``create_graph`` (cheap: ``G_t`` is linear in ``w_t``, so the weight gradient needs no second-order
    graph). Norms of scaled losses are divided by the loss scale; the update is skipped when a norm or
    loss is non-finite or fewer than two tasks have a loss graph. The paper measures G on the last shared
    layer; here it is whatever ``shared`` holds (parameters or feature maps).

    Args:
        tasks: task names.
        alpha: restoring-force strength (paper: 0.12-3; 1.5 default).
        lr: learning rate of the weights' own Adam optimizer.
    """

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(tasks)
        self.alpha = float(alpha)
        self.task_weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.optimizer = torch.optim.Adam([self.task_weights], lr=lr)
        self.initial_losses: dict[str, float] = {}

    def to(self, device: torch.device | str) -> GradNorm:
        self.task_weights.data = self.task_weights.data.to(device)
        return self

    def backward(
        self, task_losses: dict[str, Tensor], shared: list[Tensor], scaler: LossScaler | None
    ) -> dict[str, float]:
        """Backward with the current weights, then one update of the weights; returns the weights used."""
        self.index(task_losses)
        active = active_losses(task_losses)
        weights = self.task_weights.detach().tolist()
        used = {task: weights[self.tasks.index(task)] for task in task_losses}
        norms = self._gradient_norms(active, trainable(shared), scaler) if len(active) > 1 else {}
        weighted_backward(active, used, scaler)
        losses = {task: float(active[task].detach()) for task in norms}
        losses, norms = self._synchronise(losses, norms)
        if norms:
            self._update(losses, norms)
        return used

    def _synchronise(
        self, losses: dict[str, float], norms: dict[str, float]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Under torch.distributed, average losses and gradient norms over ranks so every rank makes
        the same weight update; only tasks measured on every rank count. Every rank calls this on
        every step (a collective), whatever its own tasks."""
        if not (dist.is_available() and dist.is_initialized()):
            return losses, norms
        count = len(self.tasks)
        values = torch.zeros(3 * count, dtype=torch.float64, device=self.task_weights.device)
        for task, norm in norms.items():
            i = self.tasks.index(task)
            values[i], values[count + i], values[2 * count + i] = losses[task], norm, 1.0
        dist.all_reduce(values)
        world = dist.get_world_size()
        measured = [t for i, t in enumerate(self.tasks) if values[2 * count + i] == world]
        return (
            {t: float(values[self.tasks.index(t)]) / world for t in measured},
            {t: float(values[count + self.tasks.index(t)]) / world for t in measured},
        )

    def _gradient_norms(
        self, active: dict[str, Tensor], shared: list[Tensor], scaler: LossScaler | None
    ) -> dict[str, float]:
        """task -> unscaled norm of its (unweighted) loss gradient on ``shared``."""
        if not shared:
            return {}
        scale = loss_scale(scaler)
        norms = {}
        for task, loss in active.items():
            grads = torch.autograd.grad(
                scale_loss(loss, scaler), shared, retain_graph=True, allow_unused=True
            )
            squares = [grad.float().square().sum() for grad in grads if grad is not None]
            norms[task] = float(torch.stack(squares).sum().sqrt()) / scale if squares else 0.0
        return norms

    def _update(self, losses: dict[str, float], norms: dict[str, float]) -> None:
        if not all(math.isfinite(value) for value in [*losses.values(), *norms.values()]):
            return  # overflowed fp16 step: the scaler skips it, so do we
        for task, value in losses.items():
            if task not in self.initial_losses and value > 0:
                self.initial_losses[task] = value
        tasks = [task for task in losses if task in self.initial_losses]
        if len(tasks) < 2:
            return
        positions = torch.tensor([self.tasks.index(task) for task in tasks])
        device = self.task_weights.device
        rates = torch.tensor([losses[t] / self.initial_losses[t] for t in tasks], device=device)
        inverse_rate = rates / rates.mean()
        grad_norms = torch.tensor([norms[task] for task in tasks], device=device)
        with torch.enable_grad():
            weighted_norms = self.task_weights[positions.to(device)] * grad_norms  # G_t
            target = (weighted_norms.mean() * inverse_rate**self.alpha).detach()
            objective = (weighted_norms - target).abs().sum()
            (self.task_weights.grad,) = torch.autograd.grad(objective, [self.task_weights])
        self.optimizer.step()
        with torch.no_grad():
            self.task_weights.clamp_(min=1e-4)
            self.task_weights.mul_(len(self.tasks) / self.task_weights.sum())
        self.task_weights.grad = None

    def state_dict(self) -> dict:
        return {
            "tasks": list(self.tasks),
            "task_weights": self.task_weights.detach().clone(),
            "initial_losses": dict(self.initial_losses),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.task_weights.copy_(state["task_weights"])
        self.initial_losses = dict(state["initial_losses"])
        self.optimizer.load_state_dict(state["optimizer"])
