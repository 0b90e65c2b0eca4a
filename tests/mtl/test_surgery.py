"""Tests for visionmtl/mtl/pcgrad.py, cagrad.py, diagnostics.py and the loss-scaler handling in base.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from visionmtl.mtl import CAGrad, FixedWeighting, GradNorm, PCGrad, task_gradient_stats
from visionmtl.mtl.base import combine_gradients, gram_matrix, task_gradients
from visionmtl.mtl.cagrad import cagrad_coefficients
from visionmtl.mtl.pcgrad import project_conflicting

TASKS = ["det", "sem"]


def linear_losses(
    gradients: list[list[float]],
) -> tuple[dict[str, Tensor], nn.Parameter, nn.Parameter]:
    """Losses ``L_t = g_t . p + head_t`` whose gradient on the shared ``p`` is exactly ``g_t``."""
    shared = nn.Parameter(torch.zeros(len(gradients[0])))
    head = nn.Parameter(torch.ones(len(gradients)))
    losses = {
        task: torch.tensor(g) @ shared + 2.0 * head[i]
        for i, (task, g) in enumerate(zip(TASKS, gradients, strict=True))
    }
    return losses, shared, head


def test_pcgrad_projects_away_the_conflicting_component():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    gradients = torch.stack([g1, g2]).double()
    coefficients = project_conflicting(gradients @ gradients.T)
    projected = coefficients @ gradients
    assert float(projected[0] @ g2.double()) == pytest.approx(0.0, abs=1e-12)
    assert float(projected[1] @ g1.double()) == pytest.approx(0.0, abs=1e-12)
    # g1' = g1 - (g1.g2)/|g2|^2 g2 = (0.5, 0.5); g2' = g2 - (g2.g1)/|g1|^2 g1 = (0, 1)
    torch.testing.assert_close(
        projected, torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    )

    losses, shared, head = linear_losses([[1.0, 0.0], [-1.0, 1.0]])
    used = PCGrad(TASKS).backward(losses, [shared], scaler=None)
    torch.testing.assert_close(shared.grad, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(head.grad, torch.tensor([2.0, 2.0]))  # task-specific: untouched
    assert used == pytest.approx({"det": 2.0, "sem": 1.5})  # d = 2 g1 + 1.5 g2


def test_pcgrad_leaves_agreeing_gradients_alone():
    losses, shared, _ = linear_losses([[1.0, 0.0], [1.0, 1.0]])
    used = PCGrad(TASKS).backward(losses, [shared], scaler=None)
    torch.testing.assert_close(shared.grad, torch.tensor([2.0, 1.0]))
    assert used == {"det": 1.0, "sem": 1.0}


def test_pcgrad_accumulates_into_existing_grad():
    losses, shared, _ = linear_losses([[1.0, 0.0], [-1.0, 1.0]])
    shared.grad = torch.tensor([10.0, 10.0])
    PCGrad(TASKS).backward(losses, [shared], scaler=None)
    torch.testing.assert_close(shared.grad, torch.tensor([10.5, 11.5]))


def test_cagrad_on_agreeing_gradients_is_the_scaled_mean():
    c = 0.4
    losses, shared, head = linear_losses([[2.0, 1.0], [2.0, 1.0]])
    CAGrad(TASKS, c=c).backward(losses, [shared], scaler=None)
    mean = torch.tensor([2.0, 1.0])
    torch.testing.assert_close(shared.grad, 2 * (1 + c) / (1 + c**2) * mean)
    torch.testing.assert_close(head.grad, torch.tensor([2.0, 2.0]))

    losses, shared, _ = linear_losses([[1.0, 0.0], [0.9, 0.2]])  # nearly parallel
    CAGrad(TASKS, c=c).backward(losses, [shared], scaler=None)
    cosine = torch.nn.functional.cosine_similarity(shared.grad, torch.tensor([0.95, 0.1]), dim=0)
    assert float(cosine) > 0.995


def test_cagrad_with_c_zero_is_the_plain_sum_and_helps_the_worst_task():
    gram = torch.tensor([[1.0, -0.5], [-0.5, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(cagrad_coefficients(gram, c=0.0), torch.ones(2, dtype=torch.float64))
    gradients = torch.tensor([[1.0, 0.0], [-0.5, math.sqrt(3.75)]], dtype=torch.float64)
    update = cagrad_coefficients(gradients @ gradients.T, c=0.5) @ gradients
    plain = gradients.sum(0)
    worst = lambda d: float((gradients @ d).min() / d.norm())  # noqa: E731
    assert worst(update) > worst(plain)


class FakeScaler:
    """What a balancer needs from torch.amp.GradScaler, with a fixed scale."""

    def __init__(self, scale: float) -> None:
        self.factor = scale

    def scale(self, outputs: Tensor) -> Tensor:
        return outputs * self.factor

    def get_scale(self) -> float:
        return self.factor

    def is_enabled(self) -> bool:
        return True


@pytest.mark.parametrize("balancer_type", [FixedWeighting, PCGrad, CAGrad, GradNorm])
def test_gradients_are_scaled_exactly_once(balancer_type, toy):
    model, inputs, targets = toy
    grads = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=1024.0)):
        model.zero_grad()
        torch.manual_seed(0)
        losses, _ = model.losses(inputs, targets)
        balancer_type(TASKS).backward(losses, list(model.shared.parameters()), scaler)
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, scaled in zip(*grads, strict=True):
        torch.testing.assert_close(scaled, 1024.0 * plain)


def test_gradnorm_divides_gradient_norms_by_the_scale(toy):
    model, inputs, targets = toy
    weights = []
    for scaler in (None, FakeScaler(4096.0)):
        balancer = GradNorm(TASKS, lr=0.1)
        losses, _ = model.losses(inputs, targets, scales={"det": 10.0})
        balancer.backward(losses, list(model.shared.parameters()), scaler)
        weights.append(balancer.task_weights.detach().clone())
    assert not torch.equal(weights[0], torch.ones(2))
    torch.testing.assert_close(weights[0], weights[1])


@pytest.mark.parametrize("balancer_type", [PCGrad, CAGrad, GradNorm])
def test_non_finite_gradients_stay_non_finite(balancer_type, toy):
    model, inputs, targets = toy
    balancer = balancer_type(TASKS)
    losses, _ = model.losses(inputs, targets)
    losses["det"] = losses["det"] * torch.tensor(float("inf"))  # an fp16 overflow
    balancer.backward(losses, list(model.shared.parameters()), FakeScaler(1.0))
    assert not torch.isfinite(model.shared.weight.grad).all()
    if isinstance(balancer, GradNorm):  # the weight update is skipped
        torch.testing.assert_close(balancer.task_weights.detach(), torch.ones(2))


def test_task_gradient_stats_reports_norms_and_cosines_without_touching_grad():
    losses, shared, head = linear_losses([[3.0, 0.0], [-1.0, 1.0]])
    scaled = {task: 8.0 * loss for task, loss in losses.items()}
    stats = task_gradient_stats(scaled, [shared], scale=8.0)
    assert stats["grad_norm/det"] == pytest.approx(3.0)
    assert stats["grad_norm/sem"] == pytest.approx(math.sqrt(2.0))
    assert stats["grad_cos/det|sem"] == pytest.approx(-1 / math.sqrt(2.0))
    assert shared.grad is None and head.grad is None
    masked = task_gradient_stats({"det": losses["det"], "sem": torch.tensor(0.0)}, [shared])
    assert set(masked) == {"grad_norm/det"}


def test_interaction_summary_names_the_most_conflicting_pair():
    from visionmtl.mtl.diagnostics import interaction_summary

    stats = {
        "grad_norm/det": 3.0,
        "grad_norm/sem": 0.5,
        "grad_norm/inst": 1.0,
        "grad_cos/det|sem": 0.2,
        "grad_cos/det|inst": -0.4,
        "grad_cos/sem|inst": float("nan"),
    }
    summary = interaction_summary({"det": 1.0, "sem": 0.25}, stats)
    assert summary["w/det"] == "1.00" and summary["w/sem"] == "0.25"
    assert summary["|g|/det"] == "3" and summary["|g|/sem"] == "0.5"
    assert summary["cos_min"] == "-0.40 (det|inst)"
    assert "cos_min" not in interaction_summary({"det": 1.0}, {"grad_norm/det": 1.0})


def test_task_gradients_fill_one_buffer_that_combines_back_per_tensor():
    weight, bias, unused = (nn.Parameter(torch.randn(s)) for s in ((2, 3), (3,), (4,)))
    shared = [weight, bias, unused]
    x = torch.randn(5, 2)
    losses = {"det": (x @ weight + bias).square().sum(), "sem": (x @ weight).sin().sum()}
    flat = task_gradients(losses, shared, scaler=None)
    assert flat.shape == (2, 6 + 3 + 4)
    for row, loss in enumerate(losses.values()):
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        expected = torch.cat(
            [
                torch.zeros(t.numel()) if g is None else g.reshape(-1)
                for g, t in zip(grads, shared, strict=True)
            ]
        )
        torch.testing.assert_close(flat[row], expected)
    torch.testing.assert_close(gram_matrix(flat), (flat @ flat.T).double())
    combined = combine_gradients(flat, torch.tensor([2.0, -1.0]), shared)
    assert [c.shape for c in combined] == [t.shape for t in shared]
    torch.testing.assert_close(combined[0], (2 * flat[0] - flat[1])[:6].view(2, 3))
    assert not combined[2].any()  # no loss reaches the unused tensor
