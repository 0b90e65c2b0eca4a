"""Tests for visionmtl/evaluation/coco_eval.py on a tiny synthetic COCO file (and coco_tiny if present)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from tests.conftest import SHARED_DATA_DIR
from visionmtl.data import CocoDataset
from visionmtl.evaluation.coco_eval import CocoEvaluator, coco_ground_truth

COCO_TINY_VAL = SHARED_DATA_DIR / "coco_tiny" / "annotations" / "instances_val2017.json"

# pycocotools' mask.decode (used by COCO.annToMask) trips a numpy 2 deprecation warning.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Non-contiguous ids on purpose; "bird" has no annotation at all.
CATEGORY_IDS = [2, 5, 9]
CLASS_NAMES = ["cat", "dog", "bird"]


def _rectangle(ann_id: int, image_id: int, category_id: int, box: list[float]) -> dict:
    x, y, w, h = box
    polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": box,
        "area": w * h,
        "segmentation": [polygon],
        "iscrowd": 0,
    }


def _crowd(ann_id: int, image_id: int, category_id: int, box: list[int], size: tuple[int, int]):
    """A crowd annotation with uncompressed RLE counts, as COCO stores them."""
    height, width = size
    mask = np.zeros((height, width), dtype=np.uint8)
    x, y, w, h = box
    mask[y : y + h, x : x + w] = 1
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:  # RLE counts start with a run of zeros
        counts = [0, *counts]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(v) for v in box],
        "area": float(w * h),
        "segmentation": {"size": [height, width], "counts": counts},
        "iscrowd": 1,
    }


@pytest.fixture()
def ann_file(tmp_path: Path) -> Path:
    """Three images, cats (id 2) and dogs (id 5), one crowd cat region; no large objects."""
    dataset = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 80, "width": 100},
            {"id": 2, "file_name": "b.jpg", "height": 90, "width": 120},
            {"id": 3, "file_name": "c.jpg", "height": 64, "width": 64},
        ],
        "categories": [
            {"id": 2, "name": "cat", "supercategory": "animal"},
            {"id": 5, "name": "dog", "supercategory": "animal"},
            {"id": 9, "name": "bird", "supercategory": "animal"},
        ],
        "annotations": [
            _rectangle(1, 1, 2, [10.0, 10.0, 20.0, 20.0]),
            _rectangle(2, 1, 5, [50.0, 30.0, 40.0, 30.0]),
            _rectangle(3, 2, 5, [5.0, 5.0, 100.0, 70.0]),
            _rectangle(4, 2, 2, [30.0, 20.0, 15.0, 15.0]),
            _crowd(5, 2, 2, [60, 50, 40, 30], (90, 120)),
            _rectangle(6, 3, 2, [20.0, 20.0, 16.0, 16.0]),
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(dataset))
    return path


def _evaluator(
    ann_file: Path, category_ids: list[int], class_names: list[str], iou_types=("bbox",)
) -> CocoEvaluator:
    """An evaluator on the JSON file as pycocotools reads it, named by its path."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
    return CocoEvaluator(coco_gt, category_ids, class_names, iou_types, source=str(ann_file))


def _gt_as_predictions(
    coco: COCO, image_ids: list[int], category_ids: list[int], with_masks: bool = False
) -> list[dict[str, torch.Tensor]]:
    """Non-crowd ground truth of each image as a prediction with score 1.0."""
    label_of = {cid: k for k, cid in enumerate(category_ids)}
    predictions = []
    for image_id in image_ids:
        anns = [a for a in coco.imgToAnns[image_id] if not a["iscrowd"]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        prediction = {
            "boxes": boxes,
            "scores": torch.ones(len(anns)),
            "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
        }
        if with_masks:
            info = coco.imgs[image_id]
            masks = [torch.from_numpy(coco.annToMask(a)) for a in anns]
            prediction["masks"] = (
                torch.stack(masks) if masks else torch.zeros(0, info["height"], info["width"])
            ).to(torch.uint8)
        predictions.append(prediction)
    return predictions


def test_gt_as_predictions_is_perfect(ann_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evaluator = _evaluator(ann_file, CATEGORY_IDS, CLASS_NAMES, iou_types=("bbox", "segm"))
    image_ids = [1, 2, 3]
    evaluator.process(
        image_ids, _gt_as_predictions(evaluator.coco_gt, image_ids, CATEGORY_IDS, True)
    )
    metrics = evaluator.evaluate()
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "APm"):
            assert metrics[f"{iou_type}_{name}"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}_APl"] is None  # no large GT in the file
    assert metrics["per_class"]["cat"] == pytest.approx(
        {"bbox_AP": 1.0, "bbox_AP50": 1.0, "bbox_AP75": 1.0}
        | {"segm_AP": 1.0, "segm_AP50": 1.0, "segm_AP75": 1.0}
    )
    assert metrics["per_class"]["dog"]["segm_AP"] == pytest.approx(1.0)
    assert set(metrics["per_class"]["bird"].values()) == {None}
    assert evaluator.evaluate() == metrics  # evaluating twice gives the same answer


def test_shifted_boxes_score_much_lower(ann_file: Path) -> None:
    evaluator = _evaluator(ann_file, CATEGORY_IDS, CLASS_NAMES)
    predictions = _gt_as_predictions(evaluator.coco_gt, [1, 2, 3], CATEGORY_IDS)
    for prediction in predictions:
        prediction["boxes"] += 40.0
    evaluator.process([1, 2, 3], predictions)
    metrics = evaluator.evaluate()
    assert metrics["bbox_AP"] < 0.3
    assert metrics["bbox_AP50"] < 0.5


def test_no_predictions_give_zero_not_a_crash(ann_file: Path) -> None:
    evaluator = _evaluator(ann_file, CATEGORY_IDS, CLASS_NAMES, iou_types=("bbox", "segm"))
    empty = {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 80, 100, dtype=torch.uint8),
    }
    evaluator.process([1, 2], [empty, {**empty, "masks": torch.zeros(0, 90, 120)}])
    metrics = evaluator.evaluate()
    assert metrics["bbox_AP"] == 0.0
    assert metrics["segm_AP"] == 0.0
    assert metrics["per_class"]["dog"]["bbox_AP"] == 0.0


def test_only_processed_images_are_evaluated(ann_file: Path) -> None:
    evaluator = _evaluator(ann_file, CATEGORY_IDS, CLASS_NAMES)
    # image 1 and 2's ground truth would be missed if they counted
    evaluator.process([3], _gt_as_predictions(evaluator.coco_gt, [3], CATEGORY_IDS))
    metrics = evaluator.evaluate()
    assert metrics["bbox_AP"] == pytest.approx(1.0)
    assert metrics["per_class"]["dog"]["bbox_AP"] is None  # no dog in image 3
    evaluator.reset()
    with pytest.raises(ValueError, match="before any process"):
        evaluator.evaluate()


def test_category_ids_map_contiguous_labels(ann_file: Path) -> None:
    # Reversed order: label 0 is dog (id 5), label 1 is cat (id 2).
    evaluator = _evaluator(ann_file, [5, 2], ["dog", "cat"])
    evaluator.process([1, 2, 3], _gt_as_predictions(evaluator.coco_gt, [1, 2, 3], [5, 2]))
    assert evaluator.evaluate()["bbox_AP"] == pytest.approx(1.0)

    # Every cat predicted as label 0 (dog): the cat class gets AP 0, whatever the label order.
    evaluator.reset()
    predictions = _gt_as_predictions(evaluator.coco_gt, [1, 2, 3], [5, 2])
    for prediction in predictions:
        prediction["labels"] = torch.zeros_like(prediction["labels"])
    evaluator.process([1, 2, 3], predictions)
    per_class = evaluator.evaluate()["per_class"]
    assert per_class["cat"]["bbox_AP"] == 0.0
    assert 0.0 < per_class["dog"]["bbox_AP"] < 1.0  # found, but with false positives


def test_unknown_image_id_names_it_and_the_file(ann_file: Path) -> None:
    evaluator = _evaluator(ann_file, CATEGORY_IDS, CLASS_NAMES)
    predictions = _gt_as_predictions(evaluator.coco_gt, [1], CATEGORY_IDS)
    evaluator.process([torch.tensor(999)], predictions)
    with pytest.raises(ValueError, match=r"999.*instances\.json"):
        evaluator.evaluate()


def test_bad_inputs_are_reported(ann_file: Path) -> None:
    with pytest.raises(ValueError, match="42"):
        _evaluator(ann_file, [2, 42], ["cat", "unicorn"])
    evaluator = _evaluator(ann_file, CATEGORY_IDS, CLASS_NAMES, iou_types=("segm",))
    prediction = _gt_as_predictions(evaluator.coco_gt, [1], CATEGORY_IDS, with_masks=True)[0]
    prediction["masks"] = prediction["masks"][:, :40, :50]  # resized, not original size
    with pytest.raises(ValueError, match=r"original size"):
        evaluator.process([1], [prediction])
    prediction["labels"] = torch.tensor([0, 7])
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        evaluator.process([1], [prediction])


def test_verbose_prints_the_summary(ann_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evaluator = _evaluator(ann_file, CATEGORY_IDS, CLASS_NAMES)
    evaluator.process([1], _gt_as_predictions(evaluator.coco_gt, [1], CATEGORY_IDS))
    evaluator.evaluate(verbose=True)
    assert "Average Precision" in capsys.readouterr().out


@pytest.mark.skipif(not COCO_TINY_VAL.is_file(), reason="../shared/data/coco_tiny is absent")
def test_coco_tiny_gt_as_predictions_is_perfect() -> None:
    coco = COCO(str(COCO_TINY_VAL))
    category_ids = sorted(coco.getCatIds())
    class_names = [coco.cats[cid]["name"] for cid in category_ids]
    evaluator = _evaluator(COCO_TINY_VAL, category_ids, class_names, iou_types=("bbox", "segm"))
    image_ids = sorted(coco.getImgIds())
    evaluator.process(image_ids, _gt_as_predictions(coco, image_ids, category_ids, True))
    metrics = evaluator.evaluate()
    assert metrics["bbox_AP"] == pytest.approx(1.0)
    assert metrics["segm_AP"] == pytest.approx(1.0)
    present = {coco.cats[a["category_id"]]["name"] for a in coco.anns.values() if not a["iscrowd"]}
    for name, class_metrics in metrics["per_class"].items():
        if name in present:
            assert class_metrics["bbox_AP"] == pytest.approx(1.0), name
        else:  # no non-crowd GT in the evaluated images
            assert class_metrics["bbox_AP"] is None, name


def test_for_dataset_scores_the_data_set_against_its_ground_truth(ann_file: Path) -> None:
    dataset = CocoDataset(ann_file, ann_file.parent)
    ground_truth = coco_ground_truth(dataset)
    # A clean file is scored as written.
    assert ground_truth.dataset["annotations"] == json.loads(ann_file.read_text())["annotations"]
    assert dataset.annotation_changes() == {"dropped": 0, "fixed": 0}
    evaluator = CocoEvaluator.for_dataset(dataset, iou_types=("bbox", "segm"))
    assert (evaluator.category_ids, evaluator.class_names) == (CATEGORY_IDS, CLASS_NAMES)
    image_ids = [1, 2, 3]
    evaluator.process(image_ids, _gt_as_predictions(ground_truth, image_ids, CATEGORY_IDS, True))
    metrics = evaluator.evaluate()
    assert metrics["bbox_AP"] == pytest.approx(1.0)
    assert metrics["segm_AP"] == pytest.approx(1.0)
    evaluator.process([999], _gt_as_predictions(ground_truth, [1], CATEGORY_IDS, True))
    with pytest.raises(ValueError, match=r"999.*instances\.json"):
        evaluator.evaluate()


@pytest.mark.parametrize(
    ("policy", "changes", "scored_box"),
    [
        ("skip", {"dropped": 1, "fixed": 0}, None),
        ("fix", {"dropped": 0, "fixed": 1}, [50, 30, 50, 50]),
    ],
)
def test_ground_truth_is_the_cleaned_data_the_set_trains_on(
    ann_file: Path, policy: str, changes: dict, scored_box: list | None
) -> None:
    """A box reaching outside its image: "skip" drops it, "fix" clips it, for training and for
    scoring alike; a zero-size box is never scored (training ignores it under every policy)."""
    data = json.loads(ann_file.read_text())
    data["annotations"][1]["bbox"] = [50.0, 30.0, 80.0, 70.0]  # image 1 is 100 x 80
    ann_file.write_text(json.dumps(data))
    dataset = CocoDataset(ann_file, ann_file.parent, on_invalid=policy)
    assert dataset.annotation_changes() == changes
    ground_truth = coco_ground_truth(dataset)
    scored = {a["id"]: a["bbox"] for a in ground_truth.dataset["annotations"]}
    assert scored.get(2) == scored_box
    # Predicting the cleaned truth is perfect; against the raw file the clipped box would miss.
    evaluator = CocoEvaluator.for_dataset(dataset)
    evaluator.process([1, 2, 3], _gt_as_predictions(ground_truth, [1, 2, 3], CATEGORY_IDS, False))
    assert evaluator.evaluate()["bbox_AP"] == pytest.approx(1.0)
    # pycocotools writes into its ground truth: the data set itself stays as it was.
    assert coco_ground_truth(dataset).dataset == ground_truth.dataset


def test_zero_size_boxes_are_not_scored(ann_file: Path) -> None:
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["bbox"] = [10.0, 10.0, 0.0, 20.0]  # a warning: kept by "error"
    ann_file.write_text(json.dumps(data))
    dataset = CocoDataset(ann_file, ann_file.parent, on_invalid="error")
    assert 1 not in {a["id"] for a in coco_ground_truth(dataset).dataset["annotations"]}
    assert dataset.annotation_changes() == {"dropped": 1, "fixed": 0}


def _noisy_predictions(coco: COCO, image_ids: list[int], category_ids: list[int], seed: int = 0):
    """Ground truth moved by a few pixels, with random scores and a false positive per image."""
    generator = torch.Generator().manual_seed(seed)
    predictions = _gt_as_predictions(coco, image_ids, category_ids, with_masks=True)
    for prediction, image_id in zip(predictions, image_ids, strict=True):
        info = coco.imgs[image_id]
        height, width = info["height"], info["width"]
        boxes = (
            prediction["boxes"] + torch.randn(prediction["boxes"].shape, generator=generator) * 3
        )
        boxes = torch.cat([boxes, torch.tensor([[0.0, 0.0, width / 2, height / 2]])])
        masks = torch.cat([prediction["masks"], torch.zeros(1, height, width, dtype=torch.uint8)])
        masks[-1, : height // 2, : width // 2] = 1
        masks[:-1] = masks[:-1].roll(2, dims=-1)  # masks off by two pixels
        prediction.update(
            boxes=boxes.clamp_min(0),
            masks=masks,
            scores=torch.rand(len(boxes), generator=generator),
            labels=torch.cat([prediction["labels"], torch.tensor([0])]),
        )
    return predictions


def _both_engines(ann_file: Path, category_ids: list[int], class_names: list[str]):
    pytest.importorskip("faster_coco_eval")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
    image_ids = sorted(coco_gt.getImgIds())
    predictions = _noisy_predictions(coco_gt, image_ids, category_ids)
    metrics = {}
    for engine in ("pycocotools", "faster_coco_eval"):
        evaluator = CocoEvaluator(
            coco_gt, category_ids, class_names, ("bbox", "segm"), engine=engine
        )
        evaluator.process(image_ids, predictions)
        metrics[engine] = evaluator.evaluate()
    return metrics["pycocotools"], metrics["faster_coco_eval"]


def _assert_agree(reference: dict, other: dict) -> None:
    per_class, other_per_class = reference.pop("per_class"), other.pop("per_class")
    assert reference == pytest.approx(other, abs=1e-4)
    assert any(0.05 < value < 0.95 for value in reference.values() if value is not None)
    for name, values in per_class.items():
        assert values == pytest.approx(other_per_class[name], abs=1e-4), name


def test_faster_coco_eval_agrees_with_pycocotools(ann_file: Path) -> None:
    _assert_agree(*_both_engines(ann_file, CATEGORY_IDS, CLASS_NAMES))


@pytest.mark.skipif(not COCO_TINY_VAL.is_file(), reason="../shared/data/coco_tiny is absent")
def test_faster_coco_eval_agrees_with_pycocotools_on_coco_tiny() -> None:
    coco = COCO(str(COCO_TINY_VAL))
    category_ids = sorted(coco.getCatIds())
    names = [coco.cats[cid]["name"] for cid in category_ids]
    _assert_agree(*_both_engines(COCO_TINY_VAL, category_ids, names))


def test_faster_coco_eval_scores_no_predictions_as_zero(ann_file: Path) -> None:
    pytest.importorskip("faster_coco_eval")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
    evaluator = CocoEvaluator(coco_gt, CATEGORY_IDS, CLASS_NAMES, engine="faster_coco_eval")
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0).long()}
    evaluator.process([1], [empty])
    assert evaluator.evaluate()["bbox_AP"] == 0.0


def test_missing_faster_coco_eval_is_a_clear_error(
    ann_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from visionmtl.errors import ConfigError

    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import fails as if absent
    with pytest.raises(ConfigError, match=r"eval.coco_engine.*visionmtl\[fasteval\]"):
        _evaluator_with_engine(ann_file, "faster_coco_eval")


def _evaluator_with_engine(ann_file: Path, engine: str) -> CocoEvaluator:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
    return CocoEvaluator(coco_gt, CATEGORY_IDS, CLASS_NAMES, engine=engine)
