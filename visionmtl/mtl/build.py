"""Pick the task balancer named by ``mtl.method``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from visionmtl.config import MtlConfig
from visionmtl.mtl.base import TaskBalancer
from visionmtl.mtl.cagrad import CAGrad
from visionmtl.mtl.dwa import DynamicWeightAverage
from visionmtl.mtl.famo import FAMO
from visionmtl.mtl.fixed import FixedWeighting
from visionmtl.mtl.gradnorm import GradNorm
from visionmtl.mtl.pcgrad import PCGrad
from visionmtl.mtl.uncertainty import UncertaintyWeighting

BALANCERS: dict[str, type[TaskBalancer]] = {
    "fixed": FixedWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "gradnorm": GradNorm,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "famo": FAMO,
}


def build_balancer(
    cfg: MtlConfig, tasks: Sequence[str], device: torch.device | str | None = None
) -> TaskBalancer:
    """The balancer for ``cfg.method`` over ``tasks`` (``model.tasks``), moved to ``device`` if given.

    ``mtl.weights`` only applies to ``method: fixed``; other methods warn and ignore it."""
    if cfg.method not in BALANCERS:
        raise ValueError(f"mtl.method: unknown method {cfg.method!r}; one of {sorted(BALANCERS)}")
    if cfg.weights and cfg.method != "fixed":
        warnings.warn(
            f"mtl.weights {cfg.weights} is ignored by mtl.method={cfg.method} (only 'fixed' uses it)",
            stacklevel=2,
        )
    hyper: dict[str, dict[str, object]] = {
        "fixed": {"weights": cfg.weights},
        "dwa": {"temperature": cfg.dwa_temperature},
        "gradnorm": {"alpha": cfg.gradnorm_alpha, "lr": cfg.gradnorm_lr},
        "cagrad": {"c": cfg.cagrad_c},
        "famo": {"lr": cfg.famo_lr, "gamma": cfg.famo_gamma},
    }
    balancer = BALANCERS[cfg.method](list(tasks), **hyper.get(cfg.method, {}))
    return balancer.to(device) if device is not None else balancer
