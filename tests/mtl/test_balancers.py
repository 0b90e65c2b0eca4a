"""Tests for every balancer in visionmtl/mtl on the toy two-task problem, and build_balancer."""

from __future__ import annotations

import io
import math

import pytest
import torch

from visionmtl.config import MTL_METHODS, MtlConfig
from visionmtl.mtl import (
    CAGrad,
    DynamicWeightAverage,
    FixedWeighting,
    GradNorm,
    PCGrad,
    TaskBalancer,
    UncertaintyWeighting,
    build_balancer,
)

TASKS = ["det", "sem"]
METHODS = list(MTL_METHODS)


def train_steps(balancer, toy, steps=20, grad_on="params", scales=None, lr=0.05):
    """Run ``steps`` SGD steps; returns (summed raw loss per step, weights per step)."""
    model, inputs, targets = toy
    optimizer = torch.optim.SGD([*model.parameters(), *balancer.parameters()], lr=lr)
    totals, weights = [], []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        losses, features = model.losses(inputs, targets, scales)
        shared = list(model.shared.parameters()) if grad_on == "params" else [features]
        weights.append(balancer.backward(losses, shared, scaler=None))
        totals.append(sum(float(v.detach()) for v in losses.values()))
        optimizer.step()
        if step % 5 == 4:
            balancer.end_epoch({task: float(v.detach()) for task, v in losses.items()})
    return totals, weights


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("grad_on", ["params", "features"])
def test_each_method_trains_the_toy_problem(method, grad_on, toy):
    balancer = build_balancer(MtlConfig(method=method, grad_on=grad_on), TASKS)
    assert isinstance(balancer, TaskBalancer)
    totals, weights = train_steps(balancer, toy, grad_on=grad_on)
    assert totals[-1] < 0.7 * totals[0]
    for used in weights:
        assert set(used) == set(TASKS)
        assert all(math.isfinite(w) and w > 0 for w in used.values()), used


def test_fixed_weights_scale_the_gradient(toy):
    model, inputs, targets = toy
    losses, _ = model.losses(inputs, targets)
    FixedWeighting(TASKS, {"det": 3.0}).backward(losses, [], scaler=None)
    weighted = model.heads["det"].weight.grad.clone()
    model.zero_grad()
    losses, _ = model.losses(inputs, targets)
    FixedWeighting(TASKS).backward(losses, [], scaler=None)
    torch.testing.assert_close(weighted, 3.0 * model.heads["det"].weight.grad)
    # the pre-balancer API keeps working
    total, used = FixedWeighting({"det": 2.0}).combine({"det/cls": torch.tensor(1.0)})
    assert float(total) == 2.0 and used == {"det": 2.0}


def test_uncertainty_down_weights_the_scaled_up_task(toy):
    balancer = UncertaintyWeighting(TASKS)
    _, weights = train_steps(balancer, toy, steps=20, scales={"sem": 10.0}, lr=0.02)
    assert weights[-1]["sem"] < weights[-1]["det"]
    assert weights[-1]["sem"] < 1.0


def test_dwa_favours_the_task_that_improves_slower():
    balancer = DynamicWeightAverage(TASKS, temperature=2.0)
    assert balancer.current_weights() == {"det": 1.0, "sem": 1.0}
    balancer.end_epoch({"det": 1.0, "sem": 1.0})
    assert balancer.current_weights() == {"det": 1.0, "sem": 1.0}  # first two epochs: 1
    balancer.end_epoch({"det": 0.5, "sem": 0.9})  # det fell fast, sem slowly
    weights = balancer.current_weights()
    assert weights["sem"] > 1.0 > weights["det"]
    assert weights["det"] + weights["sem"] == pytest.approx(2.0)
    expected = 2 * math.exp(0.9 / 2) / (math.exp(0.5 / 2) + math.exp(0.9 / 2))
    assert weights["sem"] == pytest.approx(expected)


def test_gradnorm_lowers_the_weight_of_the_task_with_the_larger_gradient(toy):
    model, inputs, targets = toy
    balancer = GradNorm(TASKS, alpha=1.5, lr=0.1)
    losses, _ = model.losses(inputs, targets, scales={"det": 10.0})
    balancer.backward(losses, list(model.shared.parameters()), scaler=None)
    weights = dict(zip(TASKS, balancer.task_weights.tolist(), strict=True))
    assert weights["det"] < 1.0 < weights["sem"]
    assert sum(weights.values()) == pytest.approx(2.0)


@pytest.mark.parametrize("method", METHODS)
def test_masked_task_contributes_nothing(method, toy):
    model, inputs, targets = toy
    balancer = build_balancer(MtlConfig(method=method), TASKS)
    losses, _ = model.losses(inputs, targets)
    losses["sem"] = torch.tensor(0.0)  # no labelled image for "sem": no graph
    used = balancer.backward(losses, list(model.shared.parameters()), scaler=None)
    assert set(used) == set(TASKS)
    assert model.heads["sem"].weight.grad is None
    assert model.heads["det"].weight.grad.abs().sum() > 0
    assert torch.isfinite(model.shared.weight.grad).all()


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_gives_identical_behaviour(method, toy):
    model, inputs, targets = toy
    cfg = MtlConfig(method=method)
    trained = build_balancer(cfg, TASKS)
    train_steps(trained, toy, steps=10)
    restored = build_balancer(cfg, TASKS)
    restored.load_state_dict(_round_trip(trained.state_dict()))
    grads, used = [], []
    for balancer in (trained, restored):
        model.zero_grad()
        torch.manual_seed(1)  # pcgrad's random order
        losses, _ = model.losses(inputs, targets)
        used.append(balancer.backward(losses, list(model.shared.parameters()), scaler=None))
        grads.append(model.shared.weight.grad.clone())
    assert used[0] == used[1]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_load_state_dict_rejects_other_tasks():
    state = UncertaintyWeighting(["det", "inst"]).state_dict()
    with pytest.raises(ValueError, match=r"tasks \['det', 'inst'\]"):
        UncertaintyWeighting(TASKS).load_state_dict(state)


def test_unknown_task_loss_is_a_clear_error(toy):
    with pytest.raises(ValueError, match="'inst'"):
        PCGrad(TASKS).backward({"inst": torch.tensor(1.0, requires_grad=True)}, [], None)


def test_build_balancer_passes_hyper_parameters():
    cfg = MtlConfig(method="cagrad", cagrad_c=0.7)
    assert build_balancer(cfg, TASKS).c == 0.7
    gradnorm = build_balancer(MtlConfig(method="gradnorm", gradnorm_alpha=0.5), TASKS)
    assert gradnorm.alpha == 0.5
    dwa = build_balancer(MtlConfig(method="dwa", dwa_temperature=3.0), TASKS)
    assert dwa.temperature == 3.0
    assert isinstance(build_balancer(MtlConfig(method="pcgrad"), TASKS), PCGrad)
    assert isinstance(build_balancer(MtlConfig(), TASKS), FixedWeighting)
    with pytest.warns(UserWarning, match="ignored"):
        assert isinstance(
            build_balancer(MtlConfig(method="cagrad", weights={"det": 2}), TASKS), CAGrad
        )


def test_every_configurable_method_has_a_balancer() -> None:
    """The config's mtl.method choices (one Literal) and the name -> class dict stay in step."""
    from visionmtl.config import MTL_METHODS
    from visionmtl.mtl import BALANCERS

    assert set(BALANCERS) == set(MTL_METHODS)


def test_famo_raises_the_weight_of_the_task_whose_loss_stalls() -> None:
    """det's loss falls every step, sem's stalls: FAMO moves the weight to sem (its logit rises)
    and the weights stay K = 2 in sum."""
    from visionmtl.mtl.famo import FAMO

    balancer = FAMO(TASKS, lr=0.05)
    p = torch.tensor(2.0, requires_grad=True)
    optimizer = torch.optim.SGD([p], lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        used = balancer.backward({"det": p**2, "sem": 1.0 + 0 * p}, [], scaler=None)
        optimizer.step()
    z = balancer.task_weights()
    assert z["sem"] > 0.6 > 0.4 > z["det"]
    assert used["det"] + used["sem"] == pytest.approx(2.0)


def test_famo_weights_equalise_log_loss_progress() -> None:
    """Before any update (equal logits) the weight of each task is inversely proportional to its
    loss: the step descends the sum of log losses, so no task dominates by its scale alone."""
    from visionmtl.mtl.famo import FAMO

    p = torch.tensor(1.0, requires_grad=True)
    used = FAMO(TASKS).backward({"det": 10.0 * p, "sem": 1.0 * p}, [], scaler=None)
    assert used["sem"] == pytest.approx(10 * used["det"], rel=1e-4)
    assert p.grad == pytest.approx(used["det"] * 10 + used["sem"] * 1)
