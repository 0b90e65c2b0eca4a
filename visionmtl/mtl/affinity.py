"""Lookahead inter-task affinity (Fifty et al. 2021, "Efficiently Identifying Task Groupings", TAG).

How much one step on task i's loss changes task j's loss, on the same batch:

    Z[i>j] = 1 - L_j(theta_s - lr * grad_s L_i) / L_j(theta_s)

where theta_s are the shared parameters and everything task-specific stays put. Positive: a step
for i also lowers j's loss (i helps j); negative: it raises it. Z[j>j] is j's own progress, the
scale its column is read against (:func:`normalised_affinity`). Cost: one ``autograd.grad`` per task
and T + 1 forward passes without a graph; nothing of the training state changes (the parameters
and BatchNorm statistics are never modified, the random generators are restored).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from visionmtl.mtl.base import active_losses

PREFIX = "affinity/"


def affinity_key(source: str, target: str) -> str:
    """The record key of ``Z[source>target]``, e.g. ``affinity/det>sem``."""
    return f"{PREFIX}{source}>{target}"


def parse_affinity_key(key: str) -> tuple[str, str] | None:
    """``affinity/det>sem`` -> ``("det", "sem")``; None for any other key."""
    if not key.startswith(PREFIX) or ">" not in key:
        return None
    source, target = key[len(PREFIX) :].split(">", 1)
    return source, target


def lookahead_affinity(
    task_losses: Mapping[str, Tensor],
    shared: Mapping[str, Tensor],
    losses_at: Callable[[Mapping[str, Tensor]], Mapping[str, float]],
    step_size: float,
    scale: float = 1.0,
) -> dict[str, float]:
    """``Z[i>j]`` for every pair of tasks with a loss graph (the diagonal included).

    task_losses: task -> scalar loss with a graph (multiplied by ``scale`` under fp16 loss
    scaling; gradients are divided by it). shared: name -> shared parameter. losses_at: task ->
    loss of the same batch with the named parameters replaced by the given tensors (e.g.
    ``torch.func.functional_call``; the parameters themselves are never modified, so the
    training step's graph stays valid) and must leave the buffers alone (pass copies of the
    BatchNorm statistics) and the random generators as it found them (``torch.random.fork_rng``),
    so that every call sees the same random draws. Returns ``{"affinity/i>j": Z}``; a task whose loss is 0 at the start
    is left out as a target."""
    active = active_losses(task_losses)
    names = [name for name, param in shared.items() if param.requires_grad]
    params = [shared[name] for name in names]
    if not active or not params:
        return {}
    base = losses_at({})
    affinity: dict[str, float] = {}
    for source, loss in active.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        with torch.no_grad():
            stepped = {
                name: param - (step_size / scale) * grad.to(param.dtype)
                for name, param, grad in zip(names, params, grads, strict=True)
                if grad is not None
            }
        after = losses_at(stepped)
        for target in active:
            if base.get(target, 0.0) > 0 and target in after:
                affinity[affinity_key(source, target)] = 1.0 - after[target] / base[target]
    return affinity


def normalised_affinity(affinity: Mapping[str, float]) -> dict[tuple[str, str], float]:
    """``Z[i>j] / Z[j>j]`` for i != j: what a step on i does for j, in units of what j's own step
    does (1: as much as its own step, 0: nothing, < 0: harm). Pairs whose target made no progress
    on its own step (Z[j>j] <= 0) are left out."""
    pairs = {pair: value for key, value in affinity.items() if (pair := parse_affinity_key(key))}
    return {
        (source, target): value / pairs[(target, target)]
        for (source, target), value in pairs.items()
        if source != target and pairs.get((target, target), 0.0) > 0
    }
