"""Every balancing method trains end to end and logs how the tasks interact."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_train_overrides
from visionmtl.config import load_config
from visionmtl.engine.trainer import train


@pytest.mark.parametrize(
    "method,grad_on,sharing",
    [
        ("fixed", "params", "hard"),
        ("uncertainty", "params", "hard"),
        ("dwa", "params", "hard"),
        ("gradnorm", "params", "hard"),
        ("pcgrad", "params", "hard"),
        ("pcgrad", "features", "adapters"),
        ("cagrad", "params", "adapters"),
        ("famo", "params", "hard"),
    ],
)
def test_method_trains_and_logs_task_interaction(
    shapes_paths: dict,
    tmp_path: Path,
    method: str,
    grad_on: str,
    sharing: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    overrides = tiny_train_overrides(shapes_paths, tmp_path) + [
        "data.val_ann=",
        "data.num_workers=0",
        "train.epochs=3",
        f"mtl.method={method}",
        f"mtl.grad_on={grad_on}",
        f"mtl.sharing={sharing}",
        "mtl.log_every=2",
    ]
    train(load_config(None, overrides), tmp_path)
    bar = capsys.readouterr().err  # the progress bar summary shows weights and the worst cosine
    assert "w/det=" in bar and "cos_min=" in bar
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "epoch" not in r]
    assert [r["step"] for r in steps] == [0, 2, 4, 6, 8]
    tasks = {"det", "sem", "inst"}
    for record in steps:
        assert {f"weight/{t}" for t in tasks} <= set(record)
        assert all(record[f"weight/{t}"] > 0 for t in tasks)
        assert all(record[f"grad_norm/{t}"] >= 0 for t in tasks)
        assert -1.0 <= record["grad_cos/det|sem"] <= 1.0
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert "mtl" in state
    epochs = [r for r in records if "epoch" in r]
    assert all(all(v == v for k, v in r.items() if k.startswith("loss/")) for r in epochs)  # no NaN
    if method == "dwa":  # weights differ from 1 once two epochs of losses are known
        assert any(abs(steps[-1][f"weight/{t}"] - 1.0) > 1e-6 for t in tasks)


def test_partially_labelled_extra_source_trains(shapes_paths: dict, tmp_path: Path) -> None:
    source = (
        f"{{ann: {shapes_paths['val_ann']}, images: {shapes_paths['val_images']}, tasks: [det]}}"
    )
    overrides = tiny_train_overrides(shapes_paths, tmp_path) + [
        "data.val_ann=",
        "data.num_workers=0",
        "train.epochs=1",
        f"data.extra_sources=[{source}]",
    ]
    cfg = load_config(None, overrides)
    assert cfg.data.extra_sources[0].tasks == ["det"]
    train(cfg, tmp_path)
    epochs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    record = [r for r in epochs if "epoch" in r][0]
    assert record["step"] == 4  # (24 main + 8 boxes-only images) / batch 8
    assert all(record[f"loss/{t}"] == record[f"loss/{t}"] for t in ("det", "sem", "inst"))


def test_unlabelled_tasks_do_not_move_learned_weights() -> None:
    from visionmtl.engine.task_steps import labelled_only
    from visionmtl.mtl import UncertaintyWeighting
    from visionmtl.structures import labelled_tasks

    shared = torch.nn.Parameter(torch.ones(3))
    head_sem = torch.nn.Parameter(torch.ones(3))
    det_loss = (shared * 2).sum()
    sem_loss = (shared * head_sem).sum() * 0  # a head's "no labels in this batch" loss
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = labelled_only({"det": det_loss, "sem": sem_loss}, labelled_tasks(targets))
    assert set(losses) == {"det"} and float(losses["det"]) == 6.0
    balancer = UncertaintyWeighting(["det", "sem"])
    balancer.backward(losses, [shared], None)
    assert balancer.log_vars.grad[1] == 0  # the unlabelled task's weight gets no push
    assert head_sem.grad is not None  # its head still took part (DDP needs that)
