"""How task losses and gradients are combined into one training signal (see ``base.py``)."""

from visionmtl.mtl.base import TaskBalancer
from visionmtl.mtl.build import BALANCERS, build_balancer
from visionmtl.mtl.cagrad import CAGrad
from visionmtl.mtl.diagnostics import task_gradient_stats
from visionmtl.mtl.dwa import DynamicWeightAverage
from visionmtl.mtl.famo import FAMO
from visionmtl.mtl.fixed import FixedWeighting
from visionmtl.mtl.gradnorm import GradNorm
from visionmtl.mtl.pcgrad import PCGrad
from visionmtl.mtl.uncertainty import UncertaintyWeighting

__all__ = [
    "BALANCERS",
    "CAGrad",
    "DynamicWeightAverage",
    "FAMO",
    "FixedWeighting",
    "GradNorm",
    "PCGrad",
    "TaskBalancer",
    "UncertaintyWeighting",
    "build_balancer",
    "task_gradient_stats",
]
