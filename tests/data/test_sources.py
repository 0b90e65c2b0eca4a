"""Tests for visionmtl/data/sources.py and visionmtl/data/semantic_png.py (partially labelled sources)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from visionmtl.config import ModelConfig, SourceConfig
from visionmtl.data import (
    CocoDataset,
    Collator,
    DataError,
    SemanticPngDataset,
    TaskFilter,
    build_training_set,
    build_transforms,
)
from visionmtl.models import build_model
from visionmtl.structures import ClassSpec

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")

NUM_SOURCE_IMAGES = 4
PNG_CLASS_NAMES = ["triangle", "circle", "square"]  # another order than the main set's
RENAMED_IDS = {"circle": 20, "square": 30, "triangle": 10}  # new JSON ids, sorted differently


@pytest.fixture(scope="module")
def main_set(shapes_paths: dict[str, Path]) -> CocoDataset:
    return CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"])


@pytest.fixture(scope="module")
def png_source(main_set: CocoDataset, tmp_path_factory: pytest.TempPathFactory) -> SourceConfig:
    """The first images of the main set with their semantic maps as PNGs in PNG_CLASS_NAMES ids."""
    root = tmp_path_factory.mktemp("png_source")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    # main contract id (label + 1) -> PNG id; 0 and 255 stay
    to_png = np.arange(256, dtype=np.uint8)
    for label, name in enumerate(main_set.class_names):
        to_png[label + 1] = PNG_CLASS_NAMES.index(name) + 1
    for index in range(NUM_SOURCE_IMAGES):
        info = main_set.image_info(index)
        sem_seg = main_set.original_sem_seg(index)
        assert sem_seg is not None
        shutil.copy(info["path"], root / "images" / info["file_name"])
        png_ids = to_png[sem_seg.astype(np.uint8)]
        Image.fromarray(png_ids, mode="L").save(
            root / "masks" / f"{Path(info['file_name']).stem}.png"
        )
    return SourceConfig(
        images=str(root / "images"),
        sem_masks=str(root / "masks"),
        tasks=["sem"],
        class_names=list(PNG_CLASS_NAMES),
    )


def _renamed_coco(shapes_paths: dict[str, Path], path: Path, unknown: str | None = None) -> Path:
    """The first images of the training JSON with other category ids (and optionally a name not in
    the main set)."""
    data: dict[str, Any] = json.loads(Path(shapes_paths["train_ann"]).read_text())
    old_to_name = {c["id"]: c["name"] for c in data["categories"]}
    images = data["images"][:NUM_SOURCE_IMAGES]
    kept = {image["id"] for image in images}
    data["images"] = images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
    for annotation in data["annotations"]:
        annotation["category_id"] = RENAMED_IDS[old_to_name[annotation["category_id"]]]
    data["categories"] = [{"id": i, "name": n} for n, i in RENAMED_IDS.items()]
    if unknown is not None:
        data["categories"].append({"id": 99, "name": unknown})
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def boxes_source(
    shapes_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> SourceConfig:
    path = _renamed_coco(shapes_paths, tmp_path_factory.mktemp("boxes") / "boxes.json")
    return SourceConfig(ann=str(path), images=str(shapes_paths["train_images"]), tasks=["det"])


@pytest.fixture(scope="module")
def mixed(main_set: CocoDataset, png_source: SourceConfig, boxes_source: SourceConfig) -> Any:
    return build_training_set(main_set, [png_source, boxes_source])


def test_targets_lack_the_keys_of_unlabelled_tasks(mixed: Any, main_set: CocoDataset) -> None:
    main_len = len(main_set)
    assert len(mixed) == main_len + 2 * NUM_SOURCE_IMAGES
    _, main_target = mixed[0]
    assert {"boxes", "labels", "mask_crops", "mask_regions", "sem_seg"} <= set(main_target)
    _, png_target = mixed[main_len]
    assert set(png_target) == {"sem_seg", "image_id", "orig_size", "image_size"}
    _, box_target = mixed[main_len + NUM_SOURCE_IMAGES]
    assert set(box_target) == {"boxes", "labels", "image_id", "orig_size", "image_size"}
    assert len(set(mixed.image_ids)) == len(mixed)
    assert [int(mixed[i][1]["image_id"]) for i in range(len(mixed))] == mixed.image_ids
    copied = pickle.loads(pickle.dumps(mixed))  # DataLoader workers with spawn
    assert torch.equal(copied[main_len][1]["sem_seg"], png_target["sem_seg"])


def test_labels_are_remapped_by_name(mixed: Any, main_set: CocoDataset) -> None:
    main_len = len(main_set)
    for index in range(NUM_SOURCE_IMAGES):  # same image files, other ids and orders
        _, main_target = main_set[index]
        _, png_target = mixed[main_len + index]
        _, box_target = mixed[main_len + NUM_SOURCE_IMAGES + index]
        # the PNGs hold original_sem_seg (full-size masks); the COCO target's map is drawn per box
        assert np.array_equal(png_target["sem_seg"].numpy(), main_set.original_sem_seg(index))
        assert torch.equal(box_target["boxes"], main_target["boxes"])
        assert torch.equal(box_target["labels"], main_target["labels"])
    assert mixed.class_names == main_set.class_names
    info = mixed.image_info(main_len)
    assert info["file_name"] == main_set.image_info(0)["file_name"]
    assert mixed.file_names()[mixed.image_ids[main_len]] == info["file_name"]


def test_unknown_names_are_errors(
    main_set: CocoDataset, shapes_paths: dict[str, Path], png_source: SourceConfig, tmp_path: Path
) -> None:
    path = _renamed_coco(shapes_paths, tmp_path / "hex.json", unknown="hexagon")
    source = SourceConfig(ann=str(path), images=str(shapes_paths["train_images"]), tasks=["det"])
    with pytest.raises(DataError, match=r"hex\.json.*'hexagon'"):
        build_training_set(main_set, [source])
    bad_png = SourceConfig(**{**vars(png_source), "class_names": ["circle", "oval", "square"]})
    with pytest.raises(DataError, match=r"masks.*class id 2 \('oval'\)"):
        build_training_set(main_set, [bad_png])


def test_png_pairing_and_id_errors(png_source: SourceConfig, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    shutil.copytree(png_source.sem_masks, masks)
    first = sorted(masks.iterdir())[0]
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(first)  # wrong size
    dataset = SemanticPngDataset(png_source.images, masks, PNG_CLASS_NAMES)
    with pytest.raises(DataError, match=rf"{first.name}: semantic mask is 12x10"):
        dataset[0]
    Image.fromarray(np.full((10, 12), 9, np.uint8), mode="L").save(first)  # id 9: no class
    with pytest.raises(
        DataError,
        match=rf"{first.name}: class ids the id map does not declare: id 9 \(120 pixels\)",
    ):
        dataset.load_class_map(0)
    ignoring = SemanticPngDataset(png_source.images, masks, PNG_CLASS_NAMES, ignore_unknown=True)
    assert (ignoring.load_class_map(0) == 255).all()
    first.unlink()
    with pytest.raises(DataError, match=rf"{first.name}: semantic mask of image .* not found"):
        SemanticPngDataset(png_source.images, masks, PNG_CLASS_NAMES)


def test_png_source_with_training_transform_pickles(png_source: SourceConfig) -> None:
    transform = build_transforms(48, train=True, hflip_prob=1.0, color_jitter=0.0)
    dataset = SemanticPngDataset(
        png_source.images, png_source.sem_masks, PNG_CLASS_NAMES, transform
    )
    image, target = pickle.loads(pickle.dumps(dataset))[1]
    assert image.shape[-2:] == target["sem_seg"].shape
    assert int(target["image_size"].max()) in range(36, 61)  # 48 * U(0.75, 1.25)
    assert "boxes" not in target and target["image_id"] == 10**9 + 1
    assert set(target["sem_seg"].unique().tolist()) <= {0, 1, 2, 3, 255}


def test_task_filter_rejects_inst_without_det(main_set: CocoDataset) -> None:
    with pytest.raises(ValueError, match="'inst' needs 'det'"):
        TaskFilter(main_set, ["sem", "inst"])
    assert set(TaskFilter(main_set, ["det", "inst"])[0][1]) >= {"boxes", "labels", "mask_crops"}
    assert "sem_seg" not in TaskFilter(main_set, ["det", "inst"])[0][1]


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(tasks=["det", "sem", "inst"], fpn_channels=16)
    model = build_model(cfg, ClassSpec.numbered(3))
    return model.train()


def test_mixed_batch_trains_and_png_images_mask_det_and_inst(
    mixed: Any, main_set: CocoDataset
) -> None:
    main_len = len(main_set)
    collate = Collator(32)
    model = _tiny_model()
    images, targets = collate([mixed[0], mixed[main_len], mixed[main_len + NUM_SOURCE_IMAGES]])
    losses = model(images, targets)
    assert {"det/cls", "sem/ce", "inst/mask"} <= set(losses)
    assert all(torch.isfinite(value) for value in losses.values())
    assert losses["inst/mask"].item() > 0 and losses["det/cls"].item() > 0

    png_only = collate([mixed[main_len], mixed[main_len + 1]])
    losses = model(*png_only)
    assert losses["sem/ce"].item() > 0
    masked = {
        name: value for name, value in losses.items() if name.split("/")[0] in ("det", "inst")
    }
    assert masked and all(value.item() == 0.0 for value in masked.values())
    model.zero_grad(set_to_none=True)
    sum(masked.values()).backward()
    for task in ("det", "inst"):
        grads = [p.grad for p in model.heads[task].parameters() if p.grad is not None]
        assert all(torch.count_nonzero(grad) == 0 for grad in grads)
    backbone_grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert all(torch.count_nonzero(grad) == 0 for grad in backbone_grads)
