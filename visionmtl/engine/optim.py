"""Optimizer and learning-rate schedule (linear warm-up, then cosine decay to zero)."""

from __future__ import annotations

import math

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from visionmtl.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; biases and normalisation parameters (1-d tensors) get no weight decay;
    parameters without ``requires_grad`` (frozen backbone levels) are left out (timm's partition).

    The groups are always ``[decay, no_decay]``, in that order, even when one is empty or
    ``weight_decay`` is 0: ``last.pt`` matches optimizer state to groups by position. timm's
    partition is asked for with a placeholder decay because with 0 it puts everything in one
    group, and it lists the no-decay group first."""
    partition = param_groups_weight_decay(model, weight_decay=1.0)
    params = {group["weight_decay"] > 0: group["params"] for group in partition}
    groups = [
        {"params": params.get(True, []), "weight_decay": cfg.weight_decay},
        {"params": params.get(False, []), "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_iters: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule: from ``0.001 * lr`` linearly up to ``lr`` over the warm-up
    (``warmup_iters``, at most ``total_iters - 1``), then cosine from ``lr`` to 0 at ``total_iters``.

    A LambdaLR, not torch's ``SequentialLR(LinearLR, CosineAnnealingLR)`` or timm's
    ``CosineLRScheduler``: both compute the same curve in another order of operations, and near
    the end of a long schedule, where ``1 + cos`` cancels, they drift from this one (relative
    1e-16 in the warm-up, 6e-13 at 12k iterations, 8e-12 at 100k), so a run would not repeat
    bit for bit; and their state dicts differ from the LambdaLR one that ``last.pt`` files hold."""
    warmup = min(cfg.warmup_iters, max(total_iters - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return 0.001 + (1 - 0.001) * step / warmup
        progress = (step - warmup) / max(total_iters - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
