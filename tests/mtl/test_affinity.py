"""Lookahead task affinity (TAG) on toy problems, and that measuring it leaves training unchanged."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_train_overrides
from visionmtl.config import load_config
from visionmtl.engine.trainer import train
from visionmtl.mtl.affinity import lookahead_affinity, normalised_affinity


def _toy(target_a: list[float], target_b: list[float]) -> dict:
    """Two tasks pulling a shared vector w (at 0) towards their own targets."""
    w = torch.zeros(2, requires_grad=True)
    a, b = torch.tensor(target_a), torch.tensor(target_b)

    def losses(weights: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": ((weights - a) ** 2).sum(), "b": ((weights - b) ** 2).sum()}

    def losses_at(replaced: dict) -> dict[str, float]:
        return {task: float(v.detach()) for task, v in losses(replaced.get("w", w)).items()}

    return lookahead_affinity(losses(w), {"w": w}, losses_at, step_size=0.1)


def test_affinity_with_itself_is_positive_and_aligned_tasks_help_each_other() -> None:
    affinity = _toy([1.0, 1.0], [1.0, 0.8])
    assert affinity["affinity/a>a"] > 0 and affinity["affinity/b>b"] > 0
    assert affinity["affinity/a>b"] > 0 and affinity["affinity/b>a"] > 0


def test_conflicting_tasks_have_negative_affinity() -> None:
    affinity = _toy([1.0, 0.0], [-1.0, 0.0])  # one step for a moves w away from b's target
    assert affinity["affinity/a>b"] < 0 and affinity["affinity/b>a"] < 0
    assert affinity["affinity/a>a"] > 0
    directed = normalised_affinity(affinity)
    assert directed[("a", "b")] < -0.5 and set(directed) == {("a", "b"), ("b", "a")}


def test_affinity_never_modifies_the_shared_parameters() -> None:
    w = torch.ones(3, requires_grad=True)
    loss = {"a": (w**2).sum(), "b": (w**3).sum()}
    seen = []

    def losses_at(replaced: dict) -> dict[str, float]:
        seen.append(replaced.get("w", w).detach().clone())
        return {"a": float((replaced.get("w", w) ** 2).sum()), "b": 1.0}

    lookahead_affinity(loss, {"w": w}, losses_at, step_size=0.5)
    assert torch.equal(w.detach(), torch.ones(3))
    assert torch.allclose(seen[1], torch.ones(3) - 0.5 * 2)  # the step for a: w - lr * 2w
    (loss["a"] + loss["b"]).backward()  # the step's graph is still valid
    assert torch.allclose(w.grad, torch.full((3,), 5.0))


def _final_weights(shapes_paths: dict, out: Path, extra: list[str]) -> dict:
    overrides = tiny_train_overrides(shapes_paths, out) + ["data.val_ann=", "train.epochs=1"]
    train(load_config(None, overrides + extra), out)
    return torch.load(out / "last.pt", weights_only=True)["model"]


def test_training_logs_affinity_and_measuring_it_changes_nothing(
    shapes_paths: dict, tmp_path: Path
) -> None:
    plain = _final_weights(shapes_paths, tmp_path / "plain", ["mtl.log_every=0"])
    measured = _final_weights(
        shapes_paths, tmp_path / "tag", ["mtl.log_every=0", "mtl.affinity_every=1"]
    )
    assert plain.keys() == measured.keys()
    assert all(torch.equal(plain[k], measured[k]) for k in plain)  # same parameters and BN stats
    lines = (tmp_path / "tag" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines if '"epoch"' not in line]
    assert [r["step"] for r in steps] == [0, 1, 2]
    for record in steps:
        for task in ("det", "sem", "inst"):
            assert f"affinity/{task}>{task}" in record
        assert record["affinity/det>det"] > 0  # a step on a task's own loss lowers it
        assert "affinity/det>sem" in record and "affinity/sem>inst" in record


@pytest.mark.parametrize("bad", ["mtl.affinity_every=-1", "mtl.affinity_every=x"])
def test_affinity_every_is_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="affinity_every"):
        load_config(None, [bad])
