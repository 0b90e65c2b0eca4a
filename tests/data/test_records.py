"""Tests for visionmtl/data/records.py and the compact, cached storage of CocoDataset."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

import visionmtl.data.coco as coco_module
from visionmtl.data import CocoDataset
from visionmtl.data.checks import check_coco_data, clean_annotations, read_coco_json
from visionmtl.data.coco import is_box_target
from visionmtl.data.records import PackedRecords, cache_key, cached

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")


def test_packed_records_round_trip_and_fresh_copies() -> None:
    records = [{"id": i, "poly": [[0.5 * i, 1.0, 2.0]], "name": "x" * i} for i in range(5)]
    packed = PackedRecords(records)
    assert len(packed) == 5 and list(packed) == records
    assert packed[-1] == records[4]
    packed[0]["poly"].append("changed")
    assert packed[0] == records[0]
    with pytest.raises(IndexError):
        packed[5]
    assert len(PackedRecords([])) == 0
    # One buffer: pickling the store moves a few arrays, not one object per record.
    assert pickle.loads(pickle.dumps(packed))[3] == records[3]


def _cleaned(ann_file: Path, policy: str = "skip") -> dict:
    data = read_coco_json(ann_file)
    return clean_annotations(data, check_coco_data(data, ann_file), policy)[0]


def _assert_same_targets(left: CocoDataset, right: CocoDataset) -> None:
    assert left.image_ids == right.image_ids
    for index in range(len(left)):
        (image_a, target_a), (image_b, target_b) = left[index], right[index]
        assert torch.equal(image_a, image_b)
        assert target_a.keys() == target_b.keys()
        assert all(torch.equal(target_a[key], target_b[key]) for key in target_a)


def _ground_truth_matches_file(dataset: CocoDataset) -> None:
    """Every field of the cleaned JSON survives the packed storage (what the dicts gave)."""
    cleaned = _cleaned(dataset.ann_file, dataset.on_invalid)
    truth = dataset.ground_truth()
    assert truth["images"] == cleaned["images"]
    # Grouped by image, in file order within each image (the order pycocotools' index keeps).
    by_image = {image["id"]: [] for image in cleaned["images"]}
    for annotation in filter(is_box_target, cleaned["annotations"]):
        by_image[annotation["image_id"]].append(annotation)
    assert truth["annotations"] == [a for group in by_image.values() for a in group]
    assert truth["categories"] == sorted(cleaned["categories"], key=lambda c: c["id"])
    assert dataset.image_ids == [image["id"] for image in cleaned["images"]]


def test_compact_storage_round_trips_shapes_with_and_without_cache(
    shapes_paths: dict[str, Path], tmp_path: Path
) -> None:
    args = (shapes_paths["val_ann"], shapes_paths["val_images"])
    plain = CocoDataset(*args)
    _ground_truth_matches_file(plain)
    first = CocoDataset(*args, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("coco-*.pkl"))) == 1
    second = CocoDataset(*args, cache_dir=tmp_path)
    _assert_same_targets(plain, first)
    _assert_same_targets(plain, second)
    assert second.ground_truth() == plain.ground_truth()
    assert [p.code for p in second.problems] == [p.code for p in plain.problems]


def test_compact_storage_round_trips_coco_tiny(shared_data_dir: Path, tmp_path: Path) -> None:
    root = shared_data_dir / "coco_tiny"
    args = (root / "annotations" / "instances_val2017.json", root / "images" / "val2017")
    plain = CocoDataset(*args, on_invalid="skip")
    _ground_truth_matches_file(plain)
    CocoDataset(*args, on_invalid="skip", cache_dir=tmp_path)
    cached_set = CocoDataset(*args, on_invalid="skip", cache_dir=tmp_path)
    for index in range(0, len(plain), max(1, len(plain) // 6)):
        (_, a), (_, b) = plain[index], cached_set[index]
        assert all(
            torch.equal(a[key], b[key])
            for key in ("boxes", "labels", "mask_crops", "mask_regions", "sem_seg")
        )
    assert cached_set.annotation_changes() == plain.annotation_changes()


def test_second_start_reads_the_cache_and_a_changed_file_is_read_again(
    shapes_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann_file = tmp_path / "ann.json"
    data = json.loads(Path(shapes_paths["val_ann"]).read_text())
    ann_file.write_text(json.dumps(data))
    cache = tmp_path / "cache"
    CocoDataset(ann_file, shapes_paths["val_images"], cache_dir=cache)

    def no_parsing(*args, **kwargs):
        raise AssertionError("the annotation file was parsed again")

    monkeypatch.setattr(coco_module, "build_index", no_parsing)
    assert CocoDataset(ann_file, shapes_paths["val_images"], cache_dir=cache).class_names == [
        "circle",
        "square",
        "triangle",
    ]
    # Same size, same second: only the contents tell the files apart.
    data["categories"][0]["name"] = "CIRCLE"
    ann_file.write_text(json.dumps(data))
    with pytest.raises(AssertionError, match="parsed again"):
        CocoDataset(ann_file, shapes_paths["val_images"], cache_dir=cache)
    # Another policy is another cache entry.
    assert cache_key(ann_file, "skip", "x") != cache_key(ann_file, "fix", "x")


def test_unreadable_cache_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "entry.pkl"
    path.write_bytes(b"not a pickle")
    assert cached(path, lambda: {"fresh": 1}) == {"fresh": 1}
    assert cached(path, lambda: {"other": 2}) == {"fresh": 1}  # the rebuilt value was stored
    assert not list(tmp_path.glob("*.tmp"))


def test_masks_are_not_decoded_without_inst_or_sem(
    shapes_paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = (shapes_paths["val_ann"], shapes_paths["val_images"])

    def no_decoding(*args, **kwargs):
        raise AssertionError("a segmentation was decoded")

    monkeypatch.setattr(coco_module, "Segment", no_decoding)
    _, target = CocoDataset(*args, tasks=["det"])[0]
    assert "mask_crops" not in target and "sem_seg" not in target and len(target["boxes"]) > 0
    for tasks in (["det", "inst"], ["sem"], None):
        with pytest.raises(AssertionError, match="decoded"):
            CocoDataset(*args, tasks=tasks)[0]
