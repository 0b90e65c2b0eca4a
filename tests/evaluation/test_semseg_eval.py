"""Tests for visionmtl/evaluation/semseg_eval.py."""

from __future__ import annotations

import pytest
import torch

from visionmtl.evaluation.semseg_eval import SemSegEvaluator


def test_perfect_prediction() -> None:
    evaluator = SemSegEvaluator(3, ["background", "cat", "dog"])
    target = torch.tensor([[0, 1, 2], [2, 1, 0]])
    evaluator.process([target.clone()], [target])
    metrics = evaluator.evaluate()
    assert metrics["mIoU"] == pytest.approx(1.0)
    assert metrics["pixel_acc"] == pytest.approx(1.0)
    assert metrics["per_class"]["background"] == {"IoU": pytest.approx(1.0)}


def test_hand_computed_confusion_and_ignore() -> None:
    evaluator = SemSegEvaluator(3, ["background", "cat", "dog"])
    # scored pixels: target 0 0 1 1 / prediction 0 1 1 1; the 255 pixels must not count
    target = torch.tensor([[0, 0, 1, 1, 255, 255]])
    prediction = torch.tensor([[0, 1, 1, 1, 2, 0]])
    evaluator.process([prediction[:, :3], prediction[:, 3:]], [target[:, :3], target[:, 3:]])
    metrics = evaluator.evaluate()
    # background: tp 1, union 2 -> 0.5; cat: tp 2, union 3 -> 2/3; dog: union 0 -> None
    assert metrics["per_class"]["background"]["IoU"] == pytest.approx(0.5, abs=1e-6)
    assert metrics["per_class"]["cat"]["IoU"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["per_class"]["dog"]["IoU"] is None
    assert metrics["mIoU"] == pytest.approx(7 / 12, abs=1e-6)
    assert metrics["pixel_acc"] == pytest.approx(3 / 4, abs=1e-6)
    assert evaluator.confusion_matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]

    evaluator.reset()
    assert evaluator.evaluate() == {
        "mIoU": None,
        "pixel_acc": None,
        "per_class": {"background": {"IoU": None}, "cat": {"IoU": None}, "dog": {"IoU": None}},
    }


def test_bad_inputs_are_reported() -> None:
    with pytest.raises(ValueError, match="class_names has 2"):
        SemSegEvaluator(3, ["background", "cat"])
    evaluator = SemSegEvaluator(2, ["background", "cat"])
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        evaluator.process(
            [torch.zeros(2, 3, dtype=torch.int64)], [torch.zeros(3, 2, dtype=torch.int64)]
        )
    with pytest.raises(ValueError, match=r"target has class values \[7\]"):
        evaluator.process([torch.zeros(1, 2, dtype=torch.int64)], [torch.tensor([[7, 255]])])
    with pytest.raises(ValueError, match=r"prediction has class values \[2\]"):
        evaluator.process([torch.tensor([[2, 0]])], [torch.tensor([[1, 0]])])
