"""FAMO: Fast Adaptive Multitask Optimization (Liu, Liu, Stone & Liu, NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from visionmtl.mtl.base import LossScaler, TaskBalancer, active_losses, weighted_backward

EPS = 1e-8  # keeps log(loss) finite for a loss at its minimum (the paper's epsilon)


class FAMO(TaskBalancer):
    """Task weights that shift towards the tasks whose loss stalls, at the cost of fixed weights.

    Logits ``xi`` give ``z = softmax(xi)``. Each step descends ``sum_t z_t log L_t`` (normalised):
    task t's gradient gets the weight ``K * z_t / (c * L_t)``, ``c = sum_s z_s / L_s``, so the
    weights sum to K, the number of active tasks, as with fixed weights of 1. Then ``xi`` takes one
    Adam step (``lr``, weight decay ``gamma``) against the tasks' log-loss decrease: a task whose
    loss fell gets less weight, one whose loss stalled gets more. One backward per step, no
    per-task gradients: O(K) extra time and space.

    The decrease of step s is measured with step s+1's losses (the next batch), as LibMTL does,
    instead of a second forward of batch s as in the paper's code. A task without a loss in either
    step (partial labels) counts a decrease of 0 (its logit still moves with the others' through
    the softmax, and with the weight decay). Under torchrun the loss vector is averaged over the
    ranks first (one small all-reduce), so every rank holds the same weights.

    Args:
        tasks: task names.
        lr: Adam learning rate of the logits (paper: 0.025).
        gamma: weight decay of the logits (paper: 0.01 for most benchmarks).
    """

    def __init__(self, tasks: Sequence[str], lr: float = 0.025, gamma: float = 0.01) -> None:
        super().__init__(tasks)
        if lr <= 0 or gamma < 0:
            raise ValueError(f"FAMO: lr must be > 0 and gamma >= 0, got {lr} and {gamma}")
        self.lr, self.gamma = float(lr), float(gamma)
        self._new_logits(torch.zeros(len(self.tasks)))
        self.previous: Tensor | None = None  # [K] last step's losses, NaN for absent tasks

    def _new_logits(self, values: Tensor) -> None:
        """The logits (a leaf tensor, not a model parameter) and their own Adam."""
        self.logits = values.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.logits], lr=self.lr, weight_decay=self.gamma)

    def to(self, device: torch.device | str) -> FAMO:
        """Logits on ``device``, beside the losses (no copy to the host per step)."""
        self._new_logits(self.logits.to(device))
        return self

    def task_weights(self) -> dict[str, float]:
        """task -> z_t, the softmax of the logits (before the 1 / L_t normalisation)."""
        return dict(zip(self.tasks, torch.softmax(self.logits.detach(), 0).tolist(), strict=True))

    def backward(
        self, task_losses: dict[str, Tensor], shared: list[Tensor], scaler: LossScaler | None
    ) -> dict[str, float]:
        """Update the logits from the loss change since the last step, then one backward of
        ``scale(sum_t w_t L_t)``; returns task -> w_t. ``shared`` is not used."""
        self.index(task_losses)
        active = active_losses(task_losses)
        losses = self._loss_vector(active)
        if self.previous is not None:
            self._update_logits(self.previous, losses)
        self.previous = losses
        used = dict.fromkeys(task_losses, 0.0)  # a task without a loss here gets no weight
        if active:
            present = [self.tasks.index(task) for task in active]
            z = torch.softmax(self.logits.detach(), 0)[present]
            inverse = z / (losses[present] + EPS)
            weights = len(present) * inverse / inverse.sum()
            used.update(zip(active, weights.tolist(), strict=True))
            weighted_backward(active, used, scaler)
        return used

    def _loss_vector(self, active: dict[str, Tensor]) -> Tensor:
        """[K] float32 detached losses (NaN: task absent), averaged over DDP ranks."""
        losses = torch.full((len(self.tasks),), float("nan"), device=self.logits.device)
        for task, loss in active.items():
            losses[self.tasks.index(task)] = loss.detach().float()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            present = (~losses.isnan()).float()
            packed = torch.cat([losses.nan_to_num(0.0), present])
            dist.all_reduce(packed)  # on the losses' device: nccl on CUDA, gloo on CPU
            count = packed[len(self.tasks) :]
            losses = torch.where(count > 0, packed[: len(self.tasks)] / count.clamp(min=1), losses)
        return losses

    def _update_logits(self, before: Tensor, after: Tensor) -> None:
        """One Adam step of the logits along J_softmax^T (log L_before - log L_after)."""
        # Tasks absent before or after: a decrease of 0 (no boolean indexing: no sync).
        decrease = ((before + EPS).log() - (after + EPS).log()).nan_to_num(0.0)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(
                torch.softmax(self.logits, 0), self.logits, grad_outputs=decrease
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.logits.grad = gradient
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {
            "tasks": list(self.tasks),
            "logits": self.logits.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "previous": None if self.previous is None else self.previous.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._new_logits(state["logits"].to(self.logits.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.previous = None if state["previous"] is None else state["previous"].clone()
