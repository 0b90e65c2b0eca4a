"""Tests for visionmtl/structures.py: the class lists of a model and the per-task helpers."""

import pytest
import torch

from visionmtl.config import ConfigError
from visionmtl.structures import ClassSpec, group_by_task, labelled_tasks, task_of


def test_class_spec_semantic_classes_default_to_the_detection_classes() -> None:
    spec = ClassSpec.from_data(["cat", "dog"], [3, 9])
    assert (
        spec.sem_names == ("cat", "dog") and not spec.has_own_sem_classes and spec.num_classes == 2
    )
    own = ClassSpec.from_data(["cat", "dog"], [3, 9], ["road", "cat"])
    assert own.sem_names == ("road", "cat") and own.has_own_sem_classes
    assert ClassSpec.from_dict(own.to_dict()) == own
    assert all(isinstance(v, list | bool) for v in own.to_dict().values())  # weights_only
    # A semantic-only model (no categories) without background; old checkpoints had background.
    stuff = ClassSpec.from_data([], [], ["sky", "road"], sem_background=False)
    assert ClassSpec.from_dict(stuff.to_dict()) == stuff
    assert stuff.sem_ids == {1: "sky", 2: "road"} and own.sem_ids[0] == "background"
    old = {k: v for k, v in stuff.to_dict().items() if k != "sem_background"}
    assert ClassSpec.from_dict(old).sem_background
    with pytest.raises(ConfigError, match="at least one category"):
        ClassSpec.from_data([], [])


@pytest.mark.parametrize(
    ("names", "ids", "expected"),
    [(["a"], [1, 2], "1 class names for 2 category ids"), (["a", "b"], [4, 4], "duplicate")],
)
def test_class_spec_rejects_inconsistent_lists(names: list, ids: list, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        ClassSpec.from_data(names, ids)


def test_group_by_task_and_labelled_tasks() -> None:
    losses = {
        "det/cls": torch.tensor(1.0),
        "det/box": torch.tensor(2.0),
        "sem/ce": torch.tensor(4.0),
    }
    grouped = group_by_task(losses)
    assert {task: float(v) for task, v in grouped.items()} == {"det": 3.0, "sem": 4.0}
    assert task_of("inst/mask") == "inst"
    targets = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)},
        {"sem_seg": torch.zeros(2, 2)},
    ]
    assert labelled_tasks(targets) == {"det", "sem"}
