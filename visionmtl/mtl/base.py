"""What every task balancer shares: the interface and the gradient plumbing.

A balancer turns per-task losses ``{"det": L_det, "sem": L_sem}`` (see :func:`visionmtl.structures.group_by_task`) into
gradients in ``.grad``. Loss-weighting methods (fixed, uncertainty, dwa) run one ordinary backward of a
weighted sum. Gradient methods (gradnorm, pcgrad, cagrad) first take one ``torch.autograd.grad`` per task
on the ``shared`` tensors, then run exactly one ``backward`` of the plain sum of the losses, during which
tensor hooks replace the gradient reaching each shared tensor by the combined one. Task-specific
parameters therefore get their ordinary gradient, and ``.grad`` is written once, at the end.

Shared tensors are either the shared parameters (backbone + neck, ``mtl.grad_on="params"``: T + 1
backward passes through the whole network) or the shared feature maps (``grad_on="features"``: T passes
through the heads only, then one through everything). Feature maps passed together should not be
computed from one another: each one's gradient is replaced by its combined total-derivative gradient.

Mixed precision: every backpropagated loss goes through ``scaler.scale(...)`` once; nothing is unscaled
here (the trainer calls ``scaler.unscale_`` / ``step`` / ``update``), and a non-finite task gradient
leaves the combined gradient non-finite so that the scaler skips the step.

DDP: the per-task ``autograd.grad`` calls never write ``.grad`` and never fire DDP's gradient-ready
hooks; the final ``backward`` is the only one that does, and DDP all-reduces the replaced gradients.
Wrapping the whole ``balancer.backward`` call in ``model.no_sync()`` except on the step that should sync
keeps working. Gradient surgery then runs on each rank's local task gradients (as in the papers' code).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn


class LossScaler(Protocol):
    """The part of ``torch.amp.GradScaler`` a balancer uses."""

    def scale(self, outputs: Tensor) -> Tensor: ...

    def get_scale(self) -> float: ...

    def is_enabled(self) -> bool: ...


class TaskBalancer:
    """Base class: per-task losses -> gradients in ``.grad``, plus the weight each task got.

    Args:
        tasks: task names, as in ``model.tasks`` (the prefixes of the loss names).
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"task balancer: duplicate task names in {list(tasks)}")
        self.tasks = list(tasks)

    def parameters(self) -> list[nn.Parameter]:
        """Learnable parameters the trainer adds to its optimizer (none by default)."""
        return []

    def backward(
        self, task_losses: dict[str, Tensor], shared: list[Tensor], scaler: LossScaler | None
    ) -> dict[str, float]:
        """Accumulate gradients of the combined objective into ``.grad``; return task -> weight.

        task_losses: task -> scalar loss (a loss without a graph, e.g. a constant 0 for a task with no
        labelled image in the batch, contributes nothing). shared: shared parameters or feature maps.
        """
        raise NotImplementedError

    def end_epoch(self, mean_task_losses: dict[str, float]) -> None:
        """Called once per epoch with the epoch's mean (unweighted) loss of each task."""

    def state_dict(self) -> dict:
        """Tensors and plain data only (checkpoints load with ``weights_only=True``)."""
        return {"tasks": list(self.tasks)}

    def load_state_dict(self, state: dict) -> None:
        if list(state.get("tasks", self.tasks)) != self.tasks:
            raise ValueError(
                f"{type(self).__name__}: the checkpoint's balancer state is for tasks "
                f"{list(state['tasks'])}, this model has {self.tasks}"
            )

    def to(self, device: torch.device | str) -> TaskBalancer:
        """Move learnable state to ``device`` (before the optimizer is built); returns self."""
        return self

    def index(self, task_losses: Mapping[str, Tensor]) -> list[int]:
        """Positions in ``self.tasks`` of the tasks in ``task_losses``; unknown tasks are an error."""
        unknown = [task for task in task_losses if task not in self.tasks]
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: losses for tasks {unknown} that are not in {self.tasks} "
                "(loss names must start with a task of model.tasks)"
            )
        return [self.tasks.index(task) for task in task_losses]


# ---------------------------------------------------------------- gradient plumbing


def scale_loss(loss: Tensor, scaler: LossScaler | None) -> Tensor:
    """``scaler.scale(loss)``, or the loss itself without a scaler."""
    return loss if scaler is None else scaler.scale(loss)


def loss_scale(scaler: LossScaler | None) -> float:
    """The factor :func:`scale_loss` multiplies by (1.0 when there is no enabled scaler)."""
    if scaler is None or not scaler.is_enabled():
        return 1.0
    return float(scaler.get_scale())


def active_losses(task_losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The losses that have a graph to backpropagate through (masked tasks have none)."""
    return {task: loss for task, loss in task_losses.items() if loss.requires_grad}


def weighted_backward(
    task_losses: Mapping[str, Tensor],
    weights: Mapping[str, Tensor | float],
    scaler: LossScaler | None,
) -> None:
    """One ``backward`` of ``scale(sum_t weights[t] * L_t)`` over the losses that have a graph."""
    terms = [weights[task] * loss for task, loss in active_losses(task_losses).items()]
    if terms:
        scale_loss(torch.stack(terms).sum(), scaler).backward()


def trainable(shared: Sequence[Tensor]) -> list[Tensor]:
    """The shared tensors gradients can flow into."""
    return [tensor for tensor in shared if tensor.requires_grad]


def task_gradients(
    task_losses: Mapping[str, Tensor], shared: Sequence[Tensor], scaler: LossScaler | None
) -> Tensor:
    """Scaled gradient of each loss on all shared tensors as one float32 buffer ``[T, N]``.

    Row t holds the t-th loss's gradients on ``shared``, flattened and concatenated in order
    (``N`` = total number of elements; zeros where a loss does not reach a tensor or has no
    graph). One buffer makes the Gram matrix and the combined gradient one matmul each instead
    of one per shared tensor (hundreds of small kernels on a GPU). The graph is retained for a
    later backward."""
    sizes = [tensor.numel() for tensor in shared]
    device = shared[0].device if shared else None
    flat = torch.zeros(len(task_losses), sum(sizes), device=device)
    for row, loss in enumerate(task_losses.values()):
        if not loss.requires_grad or not shared:
            continue
        grads = torch.autograd.grad(
            scale_loss(loss, scaler), shared, retain_graph=True, allow_unused=True
        )
        for view, grad in zip(flat[row].split(sizes), grads, strict=True):
            if grad is not None:
                view.copy_(grad.reshape(-1))
    return flat


def gram_matrix(flat: Tensor) -> Tensor:
    """Task gradients ``[T, N]`` -> float64 Gram matrix ``[T, T]``."""
    return (flat @ flat.T).double()


def combine_gradients(flat: Tensor, coefficients: Tensor, shared: Sequence[Tensor]) -> list[Tensor]:
    """``sum_t coefficients[t] * g_t`` (coefficients ``[T]``, gradients ``[T, N]``) split and
    reshaped to each shared tensor (views of one ``[N]`` buffer)."""
    combined = coefficients.to(flat) @ flat
    pieces = combined.split([tensor.numel() for tensor in shared])
    return [piece.view(tensor.shape) for piece, tensor in zip(pieces, shared, strict=True)]


def _replace_gradient(new: Tensor, grad: Tensor) -> Tensor:
    return new.to(dtype=grad.dtype)


def backward_with_shared_gradients(
    task_losses: Mapping[str, Tensor],
    shared: Sequence[Tensor],
    shared_gradients: Sequence[Tensor],
    scaler: LossScaler | None,
) -> None:
    """Backward of the plain (scaled) sum of losses, with the gradient reaching ``shared[k]`` replaced by
    ``shared_gradients[k]`` (already scaled): task-specific parameters get their ordinary gradient and
    everything behind the shared tensors gets the combined one; ``.grad`` accumulates as usual."""
    handles = [
        tensor.register_hook(functools.partial(_replace_gradient, new.detach()))
        for tensor, new in zip(shared, shared_gradients, strict=True)
    ]
    try:
        weighted_backward(task_losses, dict.fromkeys(task_losses, 1.0), scaler)
    finally:
        for handle in handles:
            handle.remove()


def surgery_backward(
    balancer: TaskBalancer,
    task_losses: dict[str, Tensor],
    shared: list[Tensor],
    scaler: LossScaler | None,
    coefficients_of: Callable[[Tensor], Tensor],
) -> dict[str, float]:
    """Shared mechanics of gradient surgery (pcgrad, cagrad): per-task gradients on ``shared``,
    ``coefficients_of(gram)`` -> ``[T]`` weights of the combined gradient ``sum_t c_t g_t``, one final
    backward. Falls back to the plain sum when fewer than two tasks have a graph or a gradient is
    non-finite (the scaler then skips the step). Returns task -> coefficient (0 for masked tasks)."""
    balancer.index(task_losses)
    active = active_losses(task_losses)
    weights = dict.fromkeys(task_losses, 0.0)
    shared = trainable(shared)
    if len(active) < 2 or not shared:
        weighted_backward(active, dict.fromkeys(active, 1.0), scaler)
        return {**weights, **dict.fromkeys(active, 1.0)}
    flat = task_gradients(active, shared, scaler)
    gram = gram_matrix(flat)
    if not torch.isfinite(gram).all():
        coefficients = torch.ones(len(active), dtype=torch.float64)
    else:
        coefficients = coefficients_of(gram)
    combined = combine_gradients(flat, coefficients, shared)
    del flat
    backward_with_shared_gradients(active, shared, combined, scaler)
    weights.update(zip(active, coefficients.tolist(), strict=True))
    return weights
