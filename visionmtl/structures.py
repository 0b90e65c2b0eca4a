"""Names every layer shares: the tasks, the target keys each task reads, the ignore id.

This module imports nothing heavy, so the config, data, models, engine and evaluation layers all
take these names from here instead of spelling them again.
"""

from __future__ import annotations

# The tasks a model can learn, in the order they are reported (config ``model.tasks``).
TASKS: tuple[str, ...] = ("det", "sem", "inst")
# Semantic label id that no loss and no metric counts (crowd regions, void, unlabelled classes).
IGNORE_INDEX: int = 255
