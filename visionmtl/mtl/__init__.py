"""How task losses (and, later, gradients) are combined into one training signal."""

from visionmtl.mtl.fixed import FixedWeighting, group_by_task, task_of

__all__ = ["FixedWeighting", "group_by_task", "task_of"]
