"""Predictor round trip on paths, PIL images, arrays and lists; odd inputs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from visionmtl import Predictor
from visionmtl.api import InputError, Result, load_rgb


@pytest.fixture(scope="module")
def predictor(trained_run: Path) -> Predictor:
    return Predictor.from_checkpoint(trained_run / "best.pt", score_thresh=0.0)


def test_inputs_of_every_kind_give_the_same_result(
    predictor: Predictor, shapes_paths: dict
) -> None:
    path = sorted(Path(shapes_paths["val_images"]).iterdir())[0]
    array = np.asarray(Image.open(path).convert("RGB"))
    by_path, by_pil, by_array = predictor([path, Image.open(path), array])
    for result in (by_path, by_pil, by_array):
        assert result.sem_seg.shape == array.shape[:2] == result.image_size
        np.testing.assert_allclose(result.boxes, by_path.boxes, atol=1e-4)
    assert set(np.unique(by_path.sem_seg)) <= {0, 1, 3, 7}  # background + dataset category ids
    assert set(by_path.labels.tolist()) <= {1, 3, 7}
    assert len(by_path.label_names) == len(by_path)


def test_boxes_in_original_pixels(predictor: Predictor, shapes_paths: dict) -> None:
    path = sorted(Path(shapes_paths["val_images"]).iterdir())[0]
    big = np.asarray(Image.open(path).convert("RGB").resize((256, 192)))
    result = predictor(big)[0]
    assert result.sem_seg.shape == (192, 256)
    if len(result):
        assert result.boxes[:, 2].max() <= 256 + 1e-3 and result.boxes[:, 3].max() <= 192 + 1e-3


def test_score_threshold_and_batching(trained_run: Path, shapes_paths: dict) -> None:
    paths = sorted(Path(shapes_paths["val_images"]).iterdir())[:5]
    strict = Predictor.from_checkpoint(trained_run / "best.pt", score_thresh=0.5, batch_size=2)
    results = strict(paths)
    assert len(results) == 5
    assert all((r.scores >= 0.5).all() for r in results)
    # A per-call threshold; the model's own (evaluation) threshold is left as it was.
    loose = strict(paths, score_thresh=0.0)
    assert sum(len(r) for r in loose) > sum(len(r) for r in results)
    assert all(len(r) <= 100 for r in loose)
    assert strict.model.heads["det"].score_thresh == strict.cfg.eval.score_thresh


def test_head_settings_changed_later_act_on_the_next_call(
    trained_run: Path, shapes_paths: dict
) -> None:
    """The heads' settings are read on every call, as the model's own evaluation does."""
    paths = sorted(Path(shapes_paths["val_images"]).iterdir())[:2]
    predictor = Predictor.from_checkpoint(trained_run / "best.pt", score_thresh=0.0)
    before = predictor(paths)
    assert max(len(r) for r in before) > 3
    predictor.model.heads["det"].max_detections = 3
    after = predictor(paths)
    assert [len(r) for r in after] == [min(len(r), 3) for r in before]
    np.testing.assert_array_equal(after[0].scores, before[0].scores[:3])
    predictor.model.heads["det"].nms_thresh = 0.0  # any overlap suppresses the lower box
    predictor.model.heads["det"].max_detections = 100
    assert max(_same_label_overlap(r) for r in before) > 0
    assert max(_same_label_overlap(r) for r in predictor(paths)) == 0


def _same_label_overlap(result: Result) -> float:
    """The largest IoU of two boxes of one label in ``result``."""
    boxes = torch.from_numpy(result.boxes)
    iou = box_iou(boxes, boxes).fill_diagonal_(0)
    same = torch.from_numpy(result.labels[:, None] == result.labels[None, :])
    return float((iou * same).max()) if len(result) else 0.0


@pytest.mark.parametrize(
    "array,shape",
    [
        (np.zeros((20, 30), np.uint8), (20, 30, 3)),
        (np.zeros((20, 30, 4), np.uint8), (20, 30, 3)),
        (np.full((20, 30, 3), 65535, np.uint16), (20, 30, 3)),
        (np.ones((1, 1, 3), np.float32), (1, 1, 3)),
    ],
)
def test_odd_arrays_are_converted(array: np.ndarray, shape: tuple) -> None:
    rgb = load_rgb(array)
    assert rgb.shape == shape and rgb.dtype == np.uint8


def test_one_pixel_image_predicts(predictor: Predictor) -> None:
    result = predictor(np.zeros((1, 1, 3), np.uint8))[0]
    assert result.sem_seg.shape == (1, 1)


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such image file"):
        load_rgb(tmp_path / "missing.jpg")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="notes.txt"):
        load_rgb(text)
    with pytest.raises(InputError, match="shape"):
        load_rgb(np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(InputError, match="unsupported input"):
        load_rgb(42)


def test_masks_at_original_size_and_panoptic(predictor: Predictor, shapes_paths: dict) -> None:
    path = sorted(Path(shapes_paths["val_images"]).iterdir())[0]
    big = np.asarray(Image.open(path).convert("RGB").resize((96, 80)))
    result = predictor(big)[0]
    assert result.masks is not None and result.masks.dtype == bool
    assert result.masks.shape == (len(result), 80, 96)
    id_map, segments = result.panoptic(score_thresh=0.0, overlap_thresh=0.0, stuff_area_thresh=1)
    assert id_map.shape == (80, 96)
    for segment in segments:
        assert (id_map == segment["id"]).sum() == segment["area"] > 0
    assert sum(s["area"] for s in segments) == (id_map > 0).sum()


def test_large_image_and_decompression_bomb(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    large = np.full((1500, 2000, 3), 90, np.uint8)
    large[300:900, 400:1200] = (230, 40, 40)
    result = predictor(large)[0]
    assert result.sem_seg.shape == (1500, 2000)
    assert result.masks is not None and result.masks.shape[1:] == (1500, 2000)
    # each mask is kept as the crop of its box (whole pixels + 1 px margin a side), not as a full
    # 1500 x 2000 image
    widths, heights = (result.boxes[:, 2:] - result.boxes[:, :2] + 4).T
    assert len(result) > 0
    assert sum(crop.size for crop in result.masks.crops) <= (widths * heights).sum()
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 x 64 > 2 x 100: PIL refuses
    with pytest.raises(InputError, match="too large"):
        load_rgb(path)


def test_predictor_scores_what_validation_recorded(trained_run: Path, shapes_paths: dict) -> None:
    """The Predictor's results on the validation images, scored with the evaluators, give the
    metrics recorded for best.pt during training exactly (same preprocessing and precision)."""
    import json

    import torch

    from visionmtl.data import CocoDataset
    from visionmtl.evaluation.coco_eval import CocoEvaluator
    from visionmtl.evaluation.semseg_eval import SemSegEvaluator

    recorded = json.loads(torch.load(trained_run / "best.pt", weights_only=True)["metrics"])
    predictor = Predictor.from_checkpoint(trained_run / "best.pt")
    assert predictor.batch_size == predictor.cfg.eval.batch_size  # the same batches as validation
    dataset = CocoDataset(shapes_paths["val_ann"], shapes_paths["val_images"])
    paths = [dataset.image_info(i)["path"] for i in range(len(dataset))]
    label_of = {int(cid): k for k, cid in enumerate(predictor.category_ids)}
    head_index = {int(cid): k for k, cid in enumerate(predictor.sem_to_category)}
    coco_eval = CocoEvaluator.for_dataset(dataset, ("bbox", "segm"))
    sem_eval = SemSegEvaluator(len(head_index), ["background", *dataset.class_names])
    for index, result in enumerate(predictor(paths)):
        labels = torch.tensor([label_of[int(c)] for c in result.labels], dtype=torch.int64)
        prediction = {
            "boxes": torch.from_numpy(result.boxes),
            "scores": torch.from_numpy(result.scores),
            "labels": labels,
            "masks": torch.from_numpy(np.asarray(result.masks)),
        }
        coco_eval.process([dataset.image_ids[index]], [prediction])
        sem = torch.from_numpy(np.vectorize(head_index.get)(result.sem_seg).astype(np.int64))
        sem_eval.process([sem], [torch.from_numpy(dataset.original_sem_seg(index))])
    scored = {**coco_eval.evaluate(), **sem_eval.evaluate()}
    for key in ("bbox_AP", "bbox_AP50", "segm_AP", "mIoU", "pixel_acc"):
        assert scored[key] == recorded[key], key
