"""ONNX export (visionmtl/api/onnx_export.py, `visionmtl export`) and OnnxPredictor: the graphs
agree with PyTorch, the predictors give the same results, the command's errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from visionmtl import OnnxPredictor, Predictor
from visionmtl.api import Result
from visionmtl.commands import main
from visionmtl.config import load_config
from visionmtl.engine.checkpoint import save_checkpoint
from visionmtl.errors import ExportError
from visionmtl.models import build_model
from visionmtl.models.postprocess import mask_features
from visionmtl.structures import ClassSpec

# Importing OnnxPredictor needs neither; exporting needs onnx, running needs onnxruntime.
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def export_dir(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "export"
    assert (
        main(["export", str(trained_run / "best.pt"), "--format", "onnx", "--out", str(out)]) == 0
    )
    return out


@pytest.fixture(scope="module")
def predictors(trained_run: Path, export_dir: Path) -> tuple[Predictor, OnnxPredictor]:
    torch_predictor = Predictor.from_checkpoint(trained_run / "best.pt", batch_size=2)
    onnx_predictor = OnnxPredictor.from_export(export_dir, batch_size=2, num_threads=1)
    return torch_predictor, onnx_predictor


def test_export_writes_the_graphs_and_what_inference_needs(
    export_dir: Path, predictors: tuple[Predictor, OnnxPredictor]
) -> None:
    assert sorted(p.name for p in export_dir.iterdir()) == [
        "mask_head.onnx",
        "model.json",
        "model.onnx",
    ]
    metadata = json.loads((export_dir / "model.json").read_text())
    torch_predictor, _ = predictors
    classes = torch_predictor.model.classes
    assert metadata["classes"]["class_names"] == list(classes.class_names)
    assert metadata["classes"]["category_ids"] == list(classes.category_ids)
    assert metadata["input"]["size_divisor"] == 32
    assert metadata["input"]["image_size"] == torch_predictor.cfg.data.image_size
    assert metadata["postprocess"]["score_thresh"] == torch_predictor.cfg.eval.score_thresh
    assert metadata["mask_head"] == "mask_head.onnx"
    # Every key is read by OnnxPredictor, but opset and torch (the record of the exporter).
    assert set(metadata) == {
        "format",
        "version",
        "network",
        "mask_head",
        "outputs",
        "input",
        "classes",
        "postprocess",
        "batch_size",
        "opset",
        "torch",
    }


@pytest.mark.parametrize("shape", [(2, 3, 64, 96), (1, 3, 128, 64)])
def test_raw_outputs_and_mask_head_agree(
    predictors: tuple[Predictor, OnnxPredictor], shape: tuple[int, ...]
) -> None:
    torch_predictor, onnx_predictor = predictors
    images = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch_predictor.model.raw_outputs(images)
    actual = onnx_predictor.raw_outputs(images)
    assert list(actual) == list(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4)
    features = mask_features(expected)
    # Small, middle and image-sized boxes: RoIs on every level the mask head reads.
    rois = torch.tensor(
        [[0, 2, 3, 12, 14], [0, 0, 0, 64, 64], [shape[0] - 1, 5, 1, 60, 40], [0, 0, 0, 500, 500]],
        dtype=torch.float32,
    )
    with torch.no_grad():
        expected_masks = torch_predictor.model.mask_logits(features, rois)
    actual_masks = onnx_predictor.mask_logits(features, rois)
    torch.testing.assert_close(actual_masks, expected_masks, rtol=1e-4, atol=1e-4)


def assert_same_results(expected: list[Result], actual: list[Result]) -> None:
    """Same labels, boxes of IoU > 0.99, semantic maps and masks >= 99.9% equal pixels."""
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual, strict=True):
        assert got.image_size == want.image_size
        np.testing.assert_array_equal(got.labels, want.labels)
        if len(want):
            iou = box_iou(torch.from_numpy(want.boxes), torch.from_numpy(got.boxes)).diagonal()
            assert iou.min() > 0.99
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
            assert (np.asarray(got.masks) == np.asarray(want.masks)).mean() >= 0.999
        assert (got.sem_seg == want.sem_seg).mean() >= 0.999


def test_results_agree_on_synthetic_images(
    predictors: tuple[Predictor, OnnxPredictor], shapes_paths: dict
) -> None:
    paths = sorted(Path(shapes_paths["val_images"]).iterdir())[:4]
    rng = np.random.default_rng(0)
    # Other sizes and aspect ratios than the training images, and noise.
    resized = [np.asarray(Image.open(p).convert("RGB").resize((150, 90))) for p in paths[:2]]
    noise = [rng.integers(0, 256, (70, 45, 3), dtype=np.uint8)]
    images = [*paths, *resized, *noise]
    torch_predictor, onnx_predictor = predictors
    expected = torch_predictor(images, score_thresh=0.05)
    assert sum(len(r) for r in expected) > 0  # the comparison covers detections and masks
    assert_same_results(expected, onnx_predictor(images, score_thresh=0.05))


def test_no_detection_left_gives_empty_results(
    predictors: tuple[Predictor, OnnxPredictor], shapes_paths: dict
) -> None:
    """Above every score no box is left: the mask head is not run, masks are [0, H, W]."""
    paths = sorted(Path(shapes_paths["val_images"]).iterdir())[:2]
    torch_predictor, onnx_predictor = predictors
    expected, actual = (
        torch_predictor(paths, score_thresh=1.5),
        onnx_predictor(paths, score_thresh=1.5),
    )
    assert_same_results(expected, actual)
    assert all(len(r) == 0 and r.masks.shape == (0, *r.image_size) for r in actual)


def test_onnx_raw_outputs_refuse_unpadded_images(
    predictors: tuple[Predictor, OnnxPredictor],
) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        predictors[1].raw_outputs(torch.zeros(1, 3, 64, 70))


def test_results_agree_on_real_photos(
    predictors: tuple[Predictor, OnnxPredictor], shared_data_dir: Path
) -> None:
    folder = shared_data_dir / "pennfudan" / "images"
    if not folder.is_dir():
        pytest.skip("../shared/data/pennfudan is not available")
    photos = sorted(folder.glob("*.jpg"))[:6]
    torch_predictor, onnx_predictor = predictors
    assert_same_results(torch_predictor(photos), onnx_predictor(photos))


def test_stream_gives_the_results_of_call(
    predictors: tuple[Predictor, OnnxPredictor], shapes_paths: dict
) -> None:
    _, onnx_predictor = predictors
    paths = sorted(Path(shapes_paths["val_images"]).iterdir())[:3]
    streamed = [result for _, result in onnx_predictor.stream(paths)]
    assert_same_results(onnx_predictor(paths), streamed)


def test_export_never_overwrites(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "model.json").write_text("mine")
    assert main(["export", str(trained_run / "best.pt"), "--out", str(tmp_path)]) == 2
    assert "model.json" in capsys.readouterr().err
    assert (tmp_path / "model.json").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


def test_export_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and "Traceback" not in err
    assert not out.exists()
    assert main(["export", str(tmp_path / "missing.pt"), "--format", "tflite", "--out", "x"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_onnx_predictor_needs_an_export(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="model.json"):
        OnnxPredictor.from_export(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ExportError, match="not a visionmtl ONNX export"):
        OnnxPredictor.from_export(tmp_path)


def test_from_export_takes_keywords_only(export_dir: Path) -> None:
    with pytest.raises(TypeError):
        OnnxPredictor.from_export(export_dir, 0.5)  # type: ignore[misc]


def _drop(section: str, key: str) -> Callable[[dict], None]:
    return lambda metadata: (metadata[section] if section else metadata).pop(key)


def _set(section: str, key: str, value: object) -> Callable[[dict], None]:
    return lambda metadata: (metadata[section] if section else metadata).__setitem__(key, value)


@pytest.mark.parametrize(
    "damage,problem",
    [
        (_drop("", "postprocess"), 'no "postprocess"'),
        (_drop("", "input"), 'no "input"'),
        (_drop("", "classes"), 'no "classes"'),
        (_drop("classes", "class_names"), '"classes" cannot be read'),
        (_set("postprocess", "nms", 0.5), "unknown key.*'nms'"),
        (_set("postprocess", "nms_thresh", "high"), '"nms_thresh" is .high.'),
        (_drop("postprocess", "max_detections"), "missing key.*'max_detections'"),
        (
            _set("input", "image_size", "abc"),
            '"input.image_size" is .abc., expected a positive int',
        ),
        (_set("input", "mean", [0.5, 0.5]), '"input.mean" is .*expected 3 numbers'),
        (_set("", "batch_size", True), '"batch_size" is True'),
        (_set("", "mask_head", None), '"mask_head" is None but the tasks are'),
        (_set("", "outputs", ["points"]), '"outputs" .* lacks'),
        (_set("", "outputs", "cls_logits"), '"outputs" is .cls_logits., expected list'),
    ],
)
def test_damaged_model_json_is_named(
    export_dir: Path, tmp_path: Path, damage: Callable[[dict], None], problem: str
) -> None:
    damaged = shutil.copytree(export_dir, tmp_path / "export")
    metadata = json.loads((damaged / "model.json").read_text())
    damage(metadata)
    (damaged / "model.json").write_text(json.dumps(metadata))
    with pytest.raises(ExportError, match=problem) as error:
        OnnxPredictor.from_export(damaged)
    assert str(damaged / "model.json") in str(error.value)


def test_outputs_are_matched_by_name(
    export_dir: Path, tmp_path: Path, predictors: tuple[Predictor, OnnxPredictor]
) -> None:
    """A reordered "outputs" list gives the same outputs; a name the graph lacks is refused."""
    edited = shutil.copytree(export_dir, tmp_path / "export")
    metadata = json.loads((edited / "model.json").read_text())
    metadata["outputs"] = metadata["outputs"][::-1]
    (edited / "model.json").write_text(json.dumps(metadata))
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = predictors[1].raw_outputs(images)
    actual = OnnxPredictor.from_export(edited, num_threads=1).raw_outputs(images)
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)
    metadata["outputs"] = [*metadata["outputs"], "extra_logits"]
    (edited / "model.json").write_text(json.dumps(metadata))
    with pytest.raises(ExportError, match="are not the outputs of model.onnx") as error:
        OnnxPredictor.from_export(edited)
    assert str(edited / "model.json") in str(error.value)


@pytest.mark.parametrize("name", ["model.onnx", "mask_head.onnx"])
def test_corrupt_graph_is_named(export_dir: Path, tmp_path: Path, name: str) -> None:
    damaged = shutil.copytree(export_dir, tmp_path / "export")
    (damaged / name).write_bytes(b"\x08\x07 not a protobuf" * 10)
    with pytest.raises(ExportError, match="not a readable ONNX graph") as error:
        OnnxPredictor.from_export(damaged)
    assert str(damaged / name) in str(error.value)


def test_export_to_a_file_fails_first(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--out naming a file (or a folder inside one) is refused before the checkpoint is read."""
    import visionmtl.api.onnx_export as onnx_export

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(onnx_export, "load_model", no_loading)
    (tmp_path / "taken").write_text("mine")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        assert main(["export", str(tmp_path / "best.pt"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "taken exists and is not a directory" in err and "Errno" not in err
    assert (tmp_path / "taken").read_text() == "mine"


def test_failed_export_removes_only_its_own_files(
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """model.json made by someone else while the graphs were traced: the export stops at it,
    removes the graphs it wrote and leaves model.json alone."""
    import visionmtl.api.onnx_export as onnx_export

    out = tmp_path / "out"
    export_metadata = onnx_export.export_metadata

    def meanwhile(*args: object, **kwargs: object) -> dict:
        out.mkdir()
        (out / "model.json").write_text("mine")
        return export_metadata(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_metadata", meanwhile)
    assert main(["export", str(trained_run / "best.pt"), "--out", str(out)]) == 2
    assert "model.json exists already" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["model.json"]
    assert (out / "model.json").read_text() == "mine"


def test_export_of_a_semantic_only_model(tmp_path: Path, shapes_paths: dict) -> None:
    """No det and no inst: no mask_head.onnx, "mask_head": null, the Predictor's results."""
    overrides = ["data.image_size=64", "model.fpn_channels=32", "model.sem.channels=16"]
    cfg = load_config(None, [*overrides, "model.tasks=[sem]"])
    torch.manual_seed(0)
    model = build_model(cfg.model, ClassSpec.numbered(3), cfg.eval).eval()
    save_checkpoint(tmp_path / "sem.pt", cfg, model)
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "sem.pt"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    metadata = json.loads((out / "model.json").read_text())
    assert metadata["mask_head"] is None and metadata["outputs"] == ["sem_logits"]
    paths = sorted(Path(shapes_paths["val_images"]).iterdir())[:3]
    expected = Predictor(model, cfg, batch_size=2)(paths)
    actual = OnnxPredictor.from_export(out, batch_size=2, num_threads=1)(paths)
    assert_same_results(expected, actual)
    assert all(r.sem_seg is not None and len(r) == 0 for r in actual)
