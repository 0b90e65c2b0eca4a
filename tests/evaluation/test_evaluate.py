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


def test_training_validation_and_eval_tool_agree_exactly(trained_run: Path, tmp_path: Path) -> None:
    """The metrics recorded for best.pt during training are what tools/eval.py gives for best.pt
    on the same set (CPU, fp32), to the last digit, and both say how they were measured."""
    from tools import eval as eval_tool

    payload = torch.load(trained_run / "best.pt", weights_only=True)
    during_training = json.loads(payload["metrics"])
    out = tmp_path / "eval.json"
    assert eval_tool.main([str(trained_run / "best.pt"), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == during_training
    assert during_training["eval_precision"] == "fp32"
    assert during_training["gt_annotations_dropped"] == 0


def test_evaluation_runs_in_eval_amp_not_train_amp(
    trained_run: Path, shapes_paths: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model trained with train.amp=bf16 is still evaluated in eval.amp (default off: fp32)."""
    import visionmtl.evaluation.evaluate as evaluate_module
    from visionmtl.config import load_config

    model, cfg = load_model(trained_run / "best.pt")
    cfg = load_config(None, ["train.amp=bf16", "model.tasks=[det,sem,inst]"])
    seen: list[str] = []
    real = evaluate_module.inference_autocast

    def spy(device: torch.device, amp: str):  # type: ignore[no-untyped-def]
        seen.append(amp)
        return real(device, amp)

    monkeypatch.setattr(evaluate_module, "inference_autocast", spy)
    dataset = CocoDataset(
        shapes_paths["val_ann"], shapes_paths["val_images"], build_transforms(64, train=False)
    )
    metrics = evaluate_model(model, dataset, cfg, torch.device("cpu"))
    assert seen and set(seen) == {"off"}
    assert metrics["eval_precision"] == "fp32"


def test_eval_coco_engine_faster_coco_eval_gives_the_same_ap(
    trained_run: Path, shapes_paths: dict
) -> None:
    """``eval.coco_engine: faster_coco_eval`` scores the same model to within 1e-4 of
    pycocotools, through the same evaluate_model call validation and tools/eval.py make."""
    pytest.importorskip("faster_coco_eval")
    from dataclasses import replace

    model, cfg = load_model(trained_run / "best.pt")
    dataset = CocoDataset(
        shapes_paths["val_ann"],
        shapes_paths["val_images"],
        build_transforms(cfg.data.image_size, train=False),
    )
    metrics = {}
    for engine in ("pycocotools", "faster_coco_eval"):
        engine_cfg = replace(cfg, eval=replace(cfg.eval, coco_engine=engine))
        metrics[engine] = evaluate_model(model, dataset, engine_cfg, torch.device("cpu"))
    reference, faster = metrics["pycocotools"], metrics["faster_coco_eval"]
    scored = [key for key in reference if key.startswith(("bbox_", "segm_"))]
    assert "bbox_AP" in scored
    for key in scored:
        assert faster[key] == pytest.approx(reference[key], abs=1e-4), key


def test_shards_merged_score_like_one_pass_even_with_a_corrupt_image(
    trained_run: Path, shapes_paths: dict, tmp_path: Path
) -> None:
    """Two shards (as two ranks run them), merged, give the one-pass metrics, also when a
    corrupt image is replaced by the next one (another shard's): no image is scored twice."""
    from visionmtl.evaluation.evaluate import run_evaluation

    model, cfg = load_model(trained_run / "best.pt")
    images = tmp_path / "images"
    shutil.copytree(shapes_paths["val_images"], images)
    data = json.loads(Path(shapes_paths["val_ann"]).read_text())
    (images / data["images"][2]["file_name"]).write_bytes(b"not a png")  # shard 0's image
    transform = build_transforms(cfg.data.image_size, train=False)
    dataset = CocoDataset(
        shapes_paths["val_ann"], images, transform, on_invalid="skip", max_bad_fraction=0.5
    )
    device = torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = run_evaluation(model, dataset, cfg, device).metrics()
        first, second = (run_evaluation(model, dataset, cfg, device, shard=(r, 2)) for r in (0, 1))
    first.add_shard(second.shard_state())
    merged = first.metrics()
    assert merged["mIoU"] == pytest.approx(whole["mIoU"], abs=1e-9)
    assert merged["bbox_AP"] == pytest.approx(whole["bbox_AP"], abs=1e-6)
    confusion = first.sem.confusion_matrix.sum()
    one_pass = run_evaluation(model, dataset, cfg, device).sem.confusion_matrix.sum()
    assert confusion == one_pass  # the replacement image's pixels counted once
