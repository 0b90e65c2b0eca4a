"""Tests for visionmtl/data/checks: check_coco, the on_invalid policies of CocoDataset and
tools/check_data.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tools.check_data import main as check_data_main
from visionmtl.data import CocoDataset, DataError, check_coco

HEIGHT, WIDTH = 40, 50


def _square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _annotation(annotation_id: int = 7, **changes: Any) -> dict[str, Any]:
    return {
        "id": annotation_id,
        "image_id": 10,
        "category_id": 9,
        "bbox": [5, 5, 10, 10],
        "segmentation": _square(5, 5, 15, 15),
        "iscrowd": 0,
    } | changes


def _base() -> dict[str, Any]:
    """Two 40x50 PNG images (a.png id 10, b.png id 20), one annotation (id 7) on a.png."""
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "height": HEIGHT, "width": WIDTH},
            {"id": 20, "file_name": "b.png", "height": HEIGHT, "width": WIDTH},
        ],
        "annotations": [_annotation(), _annotation(8, image_id=20)],
        "categories": [{"id": 9, "name": "nine"}, {"id": 2, "name": "two"}],
    }


def _write(root: Path, data: Any, names: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    """Write ``data`` as root/ann.json and 40x50 images under root/images; returns the JSON path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 90, np.uint8)).save(root / "images" / name)
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return ann_file


def _set_ann(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["annotations"][0] |= changes

    return mutate


def _set_image(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["images"][0] |= changes

    return mutate


def _rle(size: list[int]) -> dict[str, Any]:
    mask = np.zeros(size, np.uint8)
    mask[5:15, 5:15] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": size, "counts": rle["counts"].decode()}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (mutation of the JSON data, or of the image folder; expected code; annotation id; file name)
CASES: dict[str, tuple[Callable[..., None], str, int | None, str | None]] = {
    "undeclared category": (_set_ann(category_id=5), "unknown-category", 7, "a.png"),
    "unknown image": (_set_ann(image_id=99), "unknown-image", 7, None),
    "duplicate annotation id": (
        lambda d: d["annotations"].append(_annotation()),
        "duplicate-annotation-id",
        7,
        "a.png",
    ),
    "duplicate image id": (
        lambda d: d["images"].append(d["images"][0]),
        "duplicate-image-id",
        None,
        "a.png",
    ),
    "category without id": (
        lambda d: d["categories"].append({"name": "x"}),
        "bad-category",
        None,
        None,
    ),
    "duplicate category id": (
        lambda d: d["categories"].append({"id": 9}),
        "duplicate-category-id",
        None,
        None,
    ),
    "no categories": (lambda d: d.update(categories=[]), "no-categories", None, None),
    "annotations not a list": (lambda d: d.update(annotations={}), "bad-structure", None, None),
    "annotation not an object": (
        lambda d: d["annotations"].append([1, 2]),
        "bad-annotation",
        None,
        None,
    ),
    "image not an object": (lambda d: d["images"].append("c.png"), "bad-image", None, None),
    "missing bbox": (lambda d: d["annotations"][0].pop("bbox"), "missing-key", 7, "a.png"),
    "bbox as a string": (_set_ann(bbox="5,5,10,10"), "bad-type", 7, "a.png"),
    "bbox of 3 numbers": (_set_ann(bbox=[1, 2, 3]), "bad-type", 7, "a.png"),
    "string in bbox": (_set_ann(bbox=[1, "2", 3, 4]), "bad-type", 7, "a.png"),
    "image id beyond int64": (_set_image(id=2**64), "bad-type", None, None),
    "annotation id as a string": (_set_ann(id="7"), "bad-type", None, "a.png"),
    "iscrowd junk": (_set_ann(iscrowd=[1]), "bad-type", 7, "a.png"),
    "NaN in bbox": (_set_ann(bbox=[1, float("nan"), 3, 4]), "non-finite", 7, "a.png"),
    "huge bbox": (_set_ann(bbox=[1, 2, 1e12, 4]), "huge-value", 7, "a.png"),
    "negative box": (_set_ann(bbox=[20, 20, -5, 5]), "negative-bbox", 7, "a.png"),
    "zero-size box": (_set_ann(bbox=[20, 20, 0, 5]), "empty-bbox", 7, "a.png"),
    "box outside image": (_set_ann(bbox=[40, 5, 20, 10]), "bbox-outside-image", 7, "a.png"),
    "polygon of 2 points": (_set_ann(segmentation=[[1, 1, 5, 5]]), "bad-polygon", 7, "a.png"),
    "polygon of odd length": (
        _set_ann(segmentation=[[1, 1, 5, 5, 9, 9, 3]]),
        "bad-polygon",
        7,
        "a.png",
    ),
    "polygon with junk": (_set_ann(segmentation=[[1, 1, 5, {}, 9, 9]]), "bad-polygon", 7, "a.png"),
    "polygon outside": (
        _set_ann(segmentation=_square(5, 5, 90, 15)),
        "polygon-outside-image",
        7,
        "a.png",
    ),
    "empty segmentation": (_set_ann(segmentation=[]), "empty-segmentation", 7, "a.png"),
    "segmentation junk": (_set_ann(segmentation="mask"), "bad-type", 7, "a.png"),
    "RLE of another size": (_set_ann(segmentation=_rle([20, 25])), "rle-size-mismatch", 7, "a.png"),
    "RLE counts wrong sum": (
        _set_ann(segmentation={"size": [HEIGHT, WIDTH], "counts": [5, 10]}),
        "bad-rle",
        7,
        "a.png",
    ),
    "RLE string malformed": (
        _set_ann(segmentation={"size": [HEIGHT, WIDTH], "counts": "\x01zz"}),
        "bad-rle",
        7,
        "a.png",
    ),
    "zero image height": (_set_image(height=0), "bad-image-size", None, "a.png"),
    "image width as a string": (_set_image(width="50"), "bad-type", None, "a.png"),
    "image without file_name": (
        lambda d: d["images"][0].pop("file_name"),
        "missing-key",
        None,
        None,
    ),
    "same file twice": (_set_image(file_name="b.png"), "duplicate-file-name", None, "b.png"),
    "wrong image size": (_set_image(width=60), "size-mismatch", None, "a.png"),
    "missing file": (_set_image(file_name="gone.png"), "missing-file", None, "gone.png"),
    "crowd": (_set_ann(iscrowd=1), "crowd", 7, "a.png"),
    "image without annotations": (
        lambda d: d["annotations"].pop(),
        "image-without-annotations",
        None,
        "b.png",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_problem_kind_is_named(tmp_path: Path, case: str) -> None:
    mutate, code, annotation_id, file_name = CASES[case]
    data = _base()
    mutate(data)
    report = check_coco(_write(tmp_path, data), tmp_path / "images")
    found = [p for p in report.problems if p.code == code]
    assert found, report.to_text()
    assert any(p.annotation_id == annotation_id and p.file_name == file_name for p in found), found
    text = report.to_text()
    assert code in text and found[0].fix_hint in text
    if annotation_id is not None:
        assert f"annotation {annotation_id} " in text
    if file_name is not None:
        assert file_name in text
    assert report.ok == all(p.severity != "error" for p in report.problems)
    json.loads(report.to_json())  # always valid JSON, even with NaN in the input


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda p: p.write_bytes(b"not an image at all"), "unreadable-image"),
        (_truncate, "truncated-image"),
    ],
)
def test_broken_image_files(tmp_path: Path, damage: Callable[[Path], None], code: str) -> None:
    data = _base()
    data["images"][0]["file_name"] = "a.jpg"
    ann_file = _write(tmp_path, data)
    noise = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "images" / "a.jpg", quality=95)
    damage(tmp_path / "images" / "a.jpg")
    report = check_coco(ann_file, tmp_path / "images")
    assert [(p.code, p.file_name) for p in report.errors] == [(code, "a.jpg")]
    assert not check_coco(ann_file, tmp_path / "images", check_images=False).errors


def test_exif_rotated_jpeg_with_unrotated_size_gets_rotation_hint(tmp_path: Path) -> None:
    data = _base()
    data["images"][0]["file_name"] = "r.jpg"
    ann_file = _write(tmp_path, data)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: displayed as 40 wide, 50 high
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "images" / "r.jpg", exif=exif)
    (problem,) = [
        p for p in check_coco(ann_file, tmp_path / "images").problems if p.file_name == "r.jpg"
    ]
    assert problem.code == "exif-size-swapped" and problem.severity == "warning"
    assert "un-rotated" in problem.message and "EXIF" in problem.fix_hint
    # The dataset reads the stored orientation, which matches the JSON and the annotations.
    image, _ = CocoDataset(ann_file, tmp_path / "images")[0]
    assert image.shape == (3, HEIGHT, WIDTH)
    data["images"][0] |= {"height": WIDTH, "width": HEIGHT}  # the rotated size: fine
    ann_file.write_text(json.dumps(data))
    problems = check_coco(ann_file, tmp_path / "images").problems
    assert not [p for p in problems if p.file_name == "r.jpg"]


def test_clean_set_and_tool_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann_file = _write(tmp_path, _base())
    report = check_coco(ann_file, tmp_path / "images")
    assert report.ok and report.problems == [] and "0 error(s)" in report.summary()
    assert check_data_main([str(ann_file), str(tmp_path / "images")]) == 0
    data = _base()
    data["annotations"][0]["category_id"] = 5
    ann_file.write_text(json.dumps(data))
    out = tmp_path / "report.json"
    capsys.readouterr()
    assert check_data_main([str(ann_file), str(tmp_path / "images"), "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "unknown-category" in printed and "annotation 7 (image 10 (a.png))" in printed
    assert json.loads(out.read_text())["counts"] == {"unknown-category": 1}
    assert check_data_main([str(tmp_path / "missing.json"), str(tmp_path / "images")]) == 2
    ann_file.write_text("{not json")
    assert check_data_main([str(ann_file), str(tmp_path / "images"), "--no-images"]) == 2
    assert "error:" in capsys.readouterr().err


def _policy_set(tmp_path: Path) -> Path:
    data = _base()
    data["annotations"] = [
        _annotation(1),
        _annotation(2, bbox=[40, 5, 20, 10], segmentation=_square(40, 5, 50, 15)),  # clip
        _annotation(3, bbox=[20, 20, 0, 0], segmentation=_square(20, 20, 30, 25)),  # recompute
        _annotation(4, category_id=5),  # unrepairable
        _annotation(5, bbox=[0, 30, 10, 10], segmentation=[[1, 2], *_square(0, 30, 10, 40)]),
    ]
    return _write(tmp_path, data)


def test_policies_keep_the_expected_annotations(tmp_path: Path) -> None:
    ann_file = _policy_set(tmp_path)
    with pytest.raises(DataError, match=r"3 error\(s\): annotation 2 .*outside") as error:
        CocoDataset(ann_file, tmp_path / "images", on_invalid="error")
    assert str(ann_file) in str(error.value) and "visionmtl check" in str(error.value)
    skipped = CocoDataset(ann_file, tmp_path / "images", on_invalid="skip")
    assert skipped[0][1]["boxes"].tolist() == [[5, 5, 15, 15]]
    assert {
        p.annotation_id: p.action for p in skipped.problems if p.code != "image-without-annotations"
    } == {
        2: "dropped annotation",
        3: "dropped annotation",
        4: "dropped annotation",
        5: "dropped annotation",
    }
    fixed = CocoDataset(ann_file, tmp_path / "images", on_invalid="fix")
    _, target = fixed[0]
    boxes = sorted(target["boxes"].tolist())
    assert boxes == [[0, 30, 10, 40], [5, 5, 15, 15], [20, 20, 30, 25], [40, 5, 50, 15]]
    assert target["mask_crops"].shape[0] == 4
    actions = {p.annotation_id: p.action for p in fixed.problems}
    assert actions[2] == "fixed: bbox clipped to the image"
    assert actions[3] == "fixed: bbox recomputed from the segmentation"
    assert actions[4] == "dropped annotation"
    assert actions[5].startswith("fixed: kept 1 of 2 polygon(s)")
    assert fixed.report.counts["bbox-outside-image"] == 1


def test_corrupt_image_is_skipped_then_too_many_raise(tmp_path: Path) -> None:
    data = _base()
    data["images"].append({"id": 30, "file_name": "c.png", "height": HEIGHT, "width": WIDTH})
    ann_file = _write(tmp_path, data, names=("a.png", "b.png", "c.png"))
    dataset = CocoDataset(ann_file, tmp_path / "images", on_invalid="skip", max_bad_fraction=0.5)
    _truncate(tmp_path / "images" / "b.png")
    with pytest.warns(UserWarning, match="b.png"):
        _, target = dataset[1]
    assert target["image_id"].item() == 30  # the next index that loads
    assert dataset[1][1]["image_id"].item() == 30 and dataset.failed_indices == {1}
    assert [p.file_name for p in dataset.problems if p.code == "image-load-failed"] == ["b.png"]
    (tmp_path / "images" / "c.png").unlink()
    with pytest.raises(DataError, match=r"more than 50\.0% of images failed to load.*c.png"):
        dataset[2]
    strict = CocoDataset(ann_file, tmp_path / "images")
    with pytest.raises(DataError, match="b.png"):
        strict[1]
