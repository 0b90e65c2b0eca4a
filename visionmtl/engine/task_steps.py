"""What one training step does per task: which tasks a batch labels (partial labels), and the
step record of how the tasks interact (loss, weight, gradient norm, cosines) for the loggers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.func import functional_call

from visionmtl.mtl import task_gradient_stats
from visionmtl.mtl.affinity import lookahead_affinity
from visionmtl.precision import autocast
from visionmtl.structures import group_by_task


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


def task_affinity(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: list[dict[str, torch.Tensor]],
    task_losses: dict[str, torch.Tensor],
    shared: list[torch.Tensor],
    scaler: Any,
    step_size: float,
    amp: str,
) -> dict[str, float]:
    """Lookahead affinity ``affinity/i>j`` of the labelled tasks on this batch ``[B, 3, H, W]``
    (:mod:`visionmtl.mtl.affinity`), a step of ``step_size`` (``train.lr``) on the shared
    parameters; ``model`` is the unwrapped model (these forwards must not reach DDP)."""
    scale = scaler.get_scale() if scaler.is_enabled() else 1.0

    devices = [images.device] if images.device.type == "cuda" else []

    def losses_at(replaced: Mapping[str, torch.Tensor]) -> dict[str, float]:
        # Copies of the buffers take the BatchNorm updates; the generators are restored after
        # each call, so every call and the training after them draw the same numbers.
        buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            with autocast(images.device, amp):
                inputs = {**buffers, **replaced}
                losses = group_by_task(functional_call(model, inputs, (images, targets)))
        return {task: float(losses[task]) for task in task_losses if task in losses}

    names = {id(param): name for name, param in model.named_parameters()}
    named = {names[id(param)]: param for param in shared}
    scaled = {task: scaler.scale(loss) for task, loss in task_losses.items()}
    return lookahead_affinity(scaled, named, losses_at, step_size, scale=scale)


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
