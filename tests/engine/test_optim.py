"""Tests for visionmtl/engine/optim.py: weight-decay groups and the per-step learning rate."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from visionmtl.config import TrainConfig
from visionmtl.engine.optim import build_optimizer, build_scheduler


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


@pytest.mark.parametrize("weight_decay", [1e-4, 0.0])
def test_groups_are_decay_then_no_decay(weight_decay: float) -> None:
    model = _Toy()
    cfg = replace(TrainConfig(), weight_decay=weight_decay)
    optimizer = build_optimizer(model, cfg)
    decay, no_decay = optimizer.param_groups  # two groups, in this order, whatever the decay
    assert [id(p) for p in decay["params"]] == [id(model.conv.weight), id(model.fc.weight)]
    assert [id(p) for p in no_decay["params"]] == [
        id(p) for p in (model.conv.bias, model.norm.weight, model.norm.bias, model.fc.bias)
    ]
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (weight_decay, 0.0)


def _closed_form(lr: float, warmup_iters: int, total: int, step: int) -> float:
    """Linear from 0.001 * lr over min(warmup_iters, total - 1) steps, then cosine to 0."""
    warmup = min(warmup_iters, max(total - 1, 0))
    if step < warmup:
        return lr * (0.001 + 0.999 * step / warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


@pytest.mark.parametrize(
    ("warmup_iters", "total"), [(0, 10), (0, 1), (3, 20), (50, 400), (5, 5), (8, 3), (4, 1)]
)
def test_lr_follows_warmup_then_cosine(warmup_iters: int, total: int) -> None:
    lr = 0.02
    cfg = replace(TrainConfig(), lr=lr, warmup_iters=warmup_iters)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_scheduler(optimizer, cfg, total)
    for step in range(total + 1):  # total steps, and the lr after the last one
        expected = _closed_form(lr, warmup_iters, total, step)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-18)
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-18)


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 4)
        self.heads = nn.ModuleDict({"det": nn.Linear(4, 2), "sem": nn.Linear(4, 3)})


def test_head_lr_gives_a_head_its_own_learning_rate() -> None:
    model = _TwoHeads()
    cfg = replace(TrainConfig(), lr=0.01, head_lr={"sem": 3.0, "inst": 2.0})  # no inst head here
    optimizer = build_optimizer(model, cfg)
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.01, 0.01, 0.03, 0.03]
    assert [len(g["params"]) for g in groups] == [2, 2, 1, 1]  # weights, biases; sem's own pair
    sem = {id(p) for p in model.heads["sem"].parameters()}
    assert {id(p) for g in groups[2:] for p in g["params"]} == sem
    everything = [id(p) for g in groups for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())  # each exactly once
    scheduler = build_scheduler(optimizer, replace(cfg, warmup_iters=0), 10)
    optimizer.step()
    scheduler.step()
    assert groups[2]["lr"] == pytest.approx(3 * groups[0]["lr"])  # the schedule keeps the ratio


def test_head_lr_rejects_unknown_tasks_and_non_positive_values() -> None:
    from visionmtl.config import ConfigError, load_config

    for bad in ("train.head_lr={seg: 2.0}", "train.head_lr={sem: 0}"):
        with pytest.raises(ConfigError, match="head_lr"):
            load_config(None, [bad])
