"""Tests for visionmtl/evaluation/export.py through ``tools/eval.py --save-json`` on a model
trained for two epochs (``trained_run``)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tools import eval as eval_tool
from visionmtl.evaluation.coco_eval import SUMMARY_NAMES

# pycocotools' mask.decode trips a numpy 2 deprecation warning.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _rescore(results_dir: Path, iou_type: str) -> dict[str, float | None]:
    """COCOeval of a saved results file against the saved ground truth, as another tool would."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(results_dir / "ground_truth.json"))
        detections = ground_truth.loadRes(str(results_dir / f"{iou_type}_results.json"))
        coco_eval = COCOeval(ground_truth, detections, iouType=iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {
        f"{iou_type}_{name}": None if stat < 0 else float(stat)
        for name, stat in zip(SUMMARY_NAMES, coco_eval.stats, strict=False)
    }


def test_saved_results_rescore_to_the_printed_ap(
    trained_run: Path, shapes_paths: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A box outside its image is dropped by the data policy (skip): AP is scored on the cleaned
    ground truth, which is saved beside the results, and re-scoring them gives the same AP."""
    data = json.loads(Path(shapes_paths["val_ann"]).read_text())
    dropped = data["annotations"][0]
    dropped["bbox"] = [40.0, 40.0, 40.0, 40.0]  # the images are 64 x 64
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps(data))
    results_dir = tmp_path / "results"
    command = [str(trained_run / "best.pt"), "--ann", str(ann)]
    command += ["--images", str(shapes_paths["val_images"]), "--out", str(tmp_path / "eval.json")]
    # --conf-thresh 0.05: a model of two epochs scores below the default 0.25
    command += ["--save-json", str(results_dir), "--conf-thresh", "0.05"]
    assert eval_tool.main(command) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["gt_annotations_dropped"] == 1
    ground_truth = json.loads((results_dir / "ground_truth.json").read_text())
    assert dropped["id"] not in {a["id"] for a in ground_truth["annotations"]}
    boxes = json.loads((results_dir / "bbox_results.json").read_text())
    assert boxes, "the model made no detections: nothing is re-scored"
    for iou_type in ("bbox", "segm"):
        rescored = _rescore(results_dir, iou_type)
        assert rescored == {key: metrics[key] for key in rescored}, iou_type

    confusion = json.loads((results_dir / "confusion.json").read_text())
    detection = confusion["detection"]
    names = [c["name"] for c in ground_truth["categories"]]
    assert detection["class_names"] == [*names, "background"]
    # Every ground-truth box is in its class row once; every detection >= 0.05 in one column.
    assert detection["score_thresh"] == 0.05
    matrix = detection["matrix"]
    gt_per_class = [
        sum(a["category_id"] == c["id"] for a in ground_truth["annotations"])
        for c in ground_truth["categories"]
    ]
    assert [sum(row) for row in matrix[:-1]] == gt_per_class
    assert sum(sum(row[:-1]) for row in matrix) == sum(r["score"] >= 0.05 for r in boxes)
    assert confusion["semantic"]["class_names"] == ["background", *names]
    assert sum(map(sum, confusion["semantic"]["matrix"])) > 0
    import importlib.util

    from PIL import Image

    if importlib.util.find_spec("matplotlib") is not None:  # the matrices drawn too (plots extra)
        with Image.open(results_dir / "confusion.png") as picture:
            assert picture.format == "PNG" and picture.width > 2 * picture.height > 400
    else:
        assert not (results_dir / "confusion.png").exists()

    # Again into the same directory: refused before evaluating, the results left as they were.
    before = {path.name: path.read_bytes() for path in results_dir.iterdir()}
    capsys.readouterr()
    assert eval_tool.main(command) == 2
    error = capsys.readouterr().err
    assert str(results_dir / "bbox_results.json") in error and "--save-json" in error
    assert {path.name: path.read_bytes() for path in results_dir.iterdir()} == before


def test_save_json_refuses_a_directory_with_any_result_file(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """One old file is enough (new results beside it would mix two evaluations); other files in
    the directory do not matter."""
    (tmp_path / "notes.txt").write_text("mine")
    old = tmp_path / "confusion.json"
    old.write_text("{}")
    command = [str(trained_run / "best.pt"), "--save-json", str(tmp_path)]
    assert eval_tool.main(command) == 2
    assert f"error: {old} already exist" in capsys.readouterr().err
    assert old.read_text() == "{}"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["confusion.json", "notes.txt"]


def test_a_failed_save_json_leaves_no_result_file(
    trained_run: Path, shapes_paths: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result file that fails half-way takes the ones this call wrote with it, so the same
    --save-json DIR is accepted again (files there before are never touched)."""
    import visionmtl.evaluation.export as export_module

    def broken(report, file):  # noqa: ANN001
        file.write(b"half")
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(export_module, "plot_confusion", broken)
    monkeypatch.setattr(export_module.importlib.util, "find_spec", lambda name: True)
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / "notes.txt").write_text("mine")
    command = [str(trained_run / "best.pt"), "--ann", str(shapes_paths["val_ann"])]
    command += ["--images", str(shapes_paths["val_images"]), "--save-json", str(results_dir)]
    with pytest.raises(RuntimeError, match="drawing failed"):
        eval_tool.main(command)
    assert sorted(path.name for path in results_dir.iterdir()) == ["notes.txt"]
