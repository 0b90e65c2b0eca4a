"""Tests for visionmtl/evaluation/evaluate.py on a model trained for two epochs (``trained_run``)."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from visionmtl.data import CocoDataset, build_transforms
from visionmtl.engine.checkpoint import load_model
from visionmtl.evaluation.evaluate import evaluate_model


def test_eval_scores_by_image_id_when_a_corrupt_image_is_skipped(
    trained_run: Path, shapes_paths: dict, tmp_path: Path
) -> None:
    model, cfg = load_model(trained_run / "best.pt")
    images = tmp_path / "images"
    shutil.copytree(shapes_paths["val_images"], images)
    data = json.loads(Path(shapes_paths["val_ann"]).read_text())
    broken = data["images"][1]
    (images / broken["file_name"]).write_bytes(b"not a png")
    without = {
        **data,
        "images": [i for i in data["images"] if i["id"] != broken["id"]],
        "annotations": [a for a in data["annotations"] if a["image_id"] != broken["id"]],
    }
    (tmp_path / "all.json").write_text(json.dumps(data))
    (tmp_path / "without.json").write_text(json.dumps(without))
    transform = build_transforms(cfg.data.image_size, train=False)
    results = []
    for name in ("all.json", "without.json"):
        dataset = CocoDataset(
            tmp_path / name, images, transform, on_invalid="skip", max_bad_fraction=0.5
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results.append(evaluate_model(model, dataset, cfg, torch.device("cpu")))
    assert results[0]["mIoU"] == pytest.approx(results[1]["mIoU"])
