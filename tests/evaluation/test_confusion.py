"""Tests for visionmtl/evaluation/confusion.py on hand-made boxes and label maps."""

from __future__ import annotations

import contextlib
import io

import torch
from pycocotools.coco import COCO

from visionmtl.evaluation.coco_eval import CocoEvaluator
from visionmtl.evaluation.confusion import confusion_report, detection_confusion, match_detections
from visionmtl.evaluation.semseg_eval import SemSegEvaluator

CAT, DOG = 3, 7  # JSON category ids (contiguous labels 0 and 1)


def _annotation(ann_id: int, image_id: int, category_id: int, box: list[float], crowd: int = 0):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": box,
        "area": box[2] * box[3],
        "iscrowd": crowd,
    }


def _prediction(detections: list[tuple[list[float], int, float]]) -> dict[str, torch.Tensor]:
    """[(xywh box, contiguous label, score)] -> the evaluator's per-image prediction dict."""
    boxes = torch.tensor([box for box, _, _ in detections], dtype=torch.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    return {
        "boxes": boxes,
        "labels": torch.tensor([label for _, label, _ in detections], dtype=torch.int64),
        "scores": torch.tensor([score for _, _, score in detections]),
    }


def test_detection_confusion_on_two_images() -> None:
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 80, "width": 80} for i in (1, 2)],
        "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}],
        "annotations": [
            _annotation(1, 1, CAT, [0, 0, 10, 10]),
            _annotation(2, 1, DOG, [20, 20, 10, 10]),
            _annotation(3, 1, CAT, [40, 40, 10, 10]),
            _annotation(4, 2, DOG, [0, 0, 20, 20]),
            _annotation(5, 2, DOG, [50, 0, 10, 10]),
            _annotation(6, 2, CAT, [30, 30, 20, 20], crowd=1),
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    evaluator = CocoEvaluator(ground_truth, [CAT, DOG], ["cat", "dog"])
    image_1 = [
        ([0, 0, 10, 10], 0, 0.9),  # cat found as cat
        ([20, 20, 10, 10], 0, 0.8),  # dog found as cat
        ([60, 60, 5, 5], 1, 0.7),  # a dog where there is nothing
        ([40, 40, 10, 10], 0, 0.1),  # below 0.25: the cat there is missed
    ]
    image_2 = [
        ([0, 0, 20, 12], 1, 0.9),  # IoU 0.6 with dog 4 ...
        ([0, 0, 20, 20], 0, 0.3),  # ... IoU 1 as cat: greedy by IoU, so 4 is a dog seen as cat
        ([50, 0, 10, 10], 1, 0.9),  # dog found as dog
        ([30, 30, 20, 20], 0, 0.6),  # on the crowd region: ignored, as COCOeval does
    ]
    evaluator.process([1, 2], [_prediction(image_1), _prediction(image_2)])
    expected = [
        [1, 0, 1],  # cats: one found, one missed
        [2, 1, 0],  # dogs: two seen as cats, one found
        [0, 2, 0],  # background: two dogs predicted on nothing (the crowd cat is ignored)
    ]
    assert detection_confusion(evaluator).tolist() == expected
    # A looser score threshold lets the low-scoring cat find the missed one.
    assert detection_confusion(evaluator, score_thresh=0.05).tolist()[0] == [2, 0, 0]
    report = confusion_report(evaluator, None)
    assert report["detection"]["class_names"] == ["cat", "dog", "background"]
    assert report["detection"]["matrix"] == expected
    assert "semantic" not in report


def test_one_class_detection_confusion() -> None:
    gt_boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    pred_boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]])
    gt_labels, pred_labels = torch.zeros(2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64)
    matrix = match_detections(gt_boxes, gt_labels, pred_boxes, pred_labels, num_classes=1)
    # [[found, missed], [false positives, -]]: the second box on object 0 (IoU 0.82) is a
    # duplicate, and nothing is near object 1.
    assert matrix.tolist() == [[1, 1], [2, 0]]
    empty = torch.zeros(0, 4)
    no_labels = torch.zeros(0, dtype=torch.int64)
    assert match_detections(empty, no_labels, empty, no_labels, 1).tolist() == [[0, 0], [0, 0]]
    # a crowd region over the third detection: ignored, as COCOeval does, not a false positive
    crowd = torch.tensor([[45.0, 45, 70, 70]])
    matrix = match_detections(
        gt_boxes, gt_labels, pred_boxes, pred_labels, num_classes=1, crowd_boxes=crowd
    )
    assert matrix.tolist() == [[1, 1], [1, 0]]


def test_semantic_confusion_leaves_out_a_background_the_model_does_not_predict() -> None:
    prediction = torch.tensor([[1, 2], [2, 1]])
    target = torch.tensor([[1, 1], [0, 2]])
    with_background = SemSegEvaluator(3, ["background", "a", "b"])
    with_background.process([prediction], [target])
    report = confusion_report(None, with_background)["semantic"]
    assert report == {
        "class_names": ["background", "a", "b"],
        "matrix": [[0, 0, 1], [0, 1, 1], [0, 1, 0]],
    }
    without = SemSegEvaluator(3, ["background", "a", "b"], background=False)
    without.process([prediction], [target])
    report = confusion_report(None, without)["semantic"]
    assert report == {"class_names": ["a", "b"], "matrix": [[1, 1], [1, 0]]}
