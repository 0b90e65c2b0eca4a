"""How task losses and gradients are combined into one training signal (see ``base.py``)."""

from visionmtl.mtl.base import TaskBalancer
from visionmtl.mtl.build import BALANCERS, build_balancer
from visionmtl.mtl.cagrad import CAGrad
from visionmtl.mtl.diagnostics import task_gradient_stats
from visionmtl.mtl.dwa import DynamicWeightAverage
from visionmtl.mtl.fixed import FixedWeighting, group_by_task, task_of
from visionmtl.mtl.gradnorm import GradNorm
from visionmtl.mtl.pcgrad import PCGrad
from visionmtl.mtl.uncertainty import UncertaintyWeighting

__all__ = [
    "BALANCERS",
    "CAGrad",
    "DynamicWeightAverage",
    "FixedWeighting",
    "GradNorm",
    "PCGrad",
    "TaskBalancer",
    "UncertaintyWeighting",
    "build_balancer",
    "group_by_task",
    "task_of",
    "task_gradient_stats",
]
