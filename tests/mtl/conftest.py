"""A toy two-task problem: a shared linear layer and one linear head per task."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn


class ToyTwoTask(nn.Module):
    """x [N, 4] -> shared features [N, 8] -> one output [N] per task ("det", "sem")."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 8)
        self.heads = nn.ModuleDict({"det": nn.Linear(8, 1), "sem": nn.Linear(8, 1)})

    def losses(
        self, inputs: Tensor, targets: dict[str, Tensor], scales: dict[str, float] | None = None
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Per-task MSE losses (times ``scales``) and the shared features [N, 8]."""
        features = torch.relu(self.shared(inputs))
        scales = scales or {}
        losses = {
            task: scales.get(task, 1.0)
            * (head(features).squeeze(1) - targets[task]).square().mean()
            for task, head in self.heads.items()
        }
        return losses, features


@pytest.fixture
def toy() -> tuple[ToyTwoTask, Tensor, dict[str, Tensor]]:
    torch.manual_seed(0)
    inputs = torch.randn(32, 4)
    targets = {"det": inputs.sum(1), "sem": inputs[:, 0] - 2 * inputs[:, 1]}
    return ToyTwoTask(), inputs, targets
