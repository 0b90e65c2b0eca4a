"""Tests for visionmtl/data/synthetic.py and tools/make_shapes.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from visionmtl.data.coco import decode_segmentation
from visionmtl.data.synthetic import generate_shapes

REPO_ROOT = Path(__file__).resolve().parents[2]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    generate_shapes(tmp_path / "a", num_train=6, num_val=3, image_size=48, seed=5)
    generate_shapes(tmp_path / "b", num_train=6, num_val=3, image_size=48, seed=5)
    generate_shapes(tmp_path / "c", num_train=6, num_val=3, image_size=48, seed=6)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(first) == 2 + 9 and first == second
    assert first != _files(tmp_path / "c")


def test_annotations_are_clean_and_consistent(shapes_paths: dict[str, Path]) -> None:
    data = json.loads(shapes_paths["train_ann"].read_text())
    assert [c["id"] for c in data["categories"]] == [1, 3, 7]
    assert len(data["images"]) == 24
    image = np.asarray(Image.open(shapes_paths["train_images"] / data["images"][0]["file_name"]))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    formats = {type(a["segmentation"]).__name__ for a in data["annotations"]}
    assert formats == {"list", "dict"}  # polygons and compressed RLE both present
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    for ann in data["annotations"]:
        mask = decode_segmentation(ann["segmentation"], 64, 64)
        assert mask.sum() == ann["area"] >= 0.6 * (0.15 * 64) ** 2 * 0.4
        rle = mask_utils.encode(np.asfortranarray(mask))
        np.testing.assert_allclose(mask_utils.toBbox(rle), ann["bbox"])
        assert min(ann["bbox"][2:]) >= 0.15 * 64 * 0.5
    per_image = [sum(a["image_id"] == i["id"] for a in data["annotations"]) for i in data["images"]]
    assert max(per_image) <= 4


def test_about_five_percent_empty_images(tmp_path: Path) -> None:
    paths = generate_shapes(tmp_path, num_train=200, num_val=0, image_size=64, seed=1)
    data = json.loads(paths["train_ann"].read_text())
    annotated = {a["image_id"] for a in data["annotations"]}
    empty = len(data["images"]) - len(annotated)
    assert 2 <= empty <= 25  # about 5%
    assert json.loads(paths["val_ann"].read_text())["images"] == []


def test_cli(tmp_path: Path) -> None:
    script = str(REPO_ROOT / "tools" / "make_shapes.py")
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, script, str(tmp_path), "--train", "2", "--val", "1", "--size", "40"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "annotations" / "val.json") in done.stdout
    assert len(list((tmp_path / "images" / "train").glob("*.png"))) == 2
    bad = subprocess.run(
        [sys.executable, script, str(tmp_path), "--train", "many"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and "--train" in bad.stderr


@pytest.mark.parametrize("size", [16])
def test_rejects_tiny_images(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError, match="image_size"):
        generate_shapes(tmp_path, num_train=1, num_val=1, image_size=size)
