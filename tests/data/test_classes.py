"""Heads with their own class lists: a semantic head that segments "stuff" (ground) beside some
detection categories, fed by a COCO main set and a semantic PNG source, through to the Predictor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import tiny_train_overrides
from visionmtl.config import ConfigError, ModelConfig, SourceConfig, load_config
from visionmtl.data import CocoDataset, Collator, DataError, TaskFilter, build_training_set
from visionmtl.data.classes import coco_sem_table, semantic_ids
from visionmtl.models import build_model
from visionmtl.structures import ClassSpec, check_sem_class_count

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning"),
    # SEM's ground comes from a PNG that labels ground only: no source labels background
    pytest.mark.filterwarnings("ignore:no training source labels background"),
]

# Shapes categories: circle (id 1), square (id 3), triangle (id 7). The semantic head segments
# ground (stuff, not a category), circle and square; triangle is detected but not segmented.
SEM = ["ground", "circle", "square"]
NUM_PNG = 4


def test_coco_sem_table_maps_by_name_and_ignores_unknowable_background() -> None:
    table = coco_sem_table(["person", "car"], ["road", "person"])
    assert table.tolist() == [255, 2, 0]  # car is "none of these": 0; background unknowable
    covered = coco_sem_table(["person", "car"], ["person"])  # every sem class is a category
    assert covered.tolist() == [0, 1, 0]
    many = [f"c{i}" for i in range(300)]  # categories beyond 255 map by name too
    assert coco_sem_table(many, ["c254", "road"])[255] == 1
    with pytest.raises(ConfigError, match="at most 254"):
        check_sem_class_count(many)


def test_semantic_ids_keep_category_ids_and_number_stuff_above_them() -> None:
    ids, names = semantic_ids(ClassSpec.from_data(["circle", "square", "triangle"], [1, 3, 7], SEM))
    assert ids.tolist() == [0, 8, 1, 3]
    assert names == {0: "background", 8: "ground", 1: "circle", 3: "square"}
    # Without an own list: the category ids, even when names repeat or are empty
    ids, names = semantic_ids(ClassSpec.from_data(["person", "person"], [1, 5]))
    assert ids.tolist() == [0, 1, 5] and names == {0: "background", 1: "person", 5: "person"}


def test_partial_coco_source_background_is_ignored_with_the_default_list(
    shapes_paths: dict[str, Path], tmp_path: Path
) -> None:
    main = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"])
    data: dict[str, Any] = json.loads(Path(shapes_paths["train_ann"]).read_text())
    data["categories"] = [c for c in data["categories"] if c["name"] == "circle"]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] == 1]
    path = tmp_path / "circles.json"
    path.write_text(json.dumps(data))
    source = SourceConfig(ann=str(path), images=str(shapes_paths["train_images"]))
    mixed = build_training_set(main, [source])
    for index in range(len(main)):
        _, target = mixed[len(main) + index]
        values = set(torch.unique(target["sem_seg"]).tolist())
        assert values <= {1, 255}  # circle; squares/triangles/background unknown -> ignored
    # A 300-class label map no longer trips a 256-entry semantic table
    TaskFilter(main, ["det"], label_map={i: i for i in range(300)})


def test_head_has_background_only_when_a_source_labels_it(
    shapes_paths: dict[str, Path], tmp_path: Path
) -> None:
    """No source can say which pixels are none of the head's classes: the head gets no background
    class (never predicted nor scored) rather than one that is never a target."""
    main = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"], sem_classes=SEM)
    mixed = build_training_set(main, [_ground_pngs(main, tmp_path / "g")], sem_classes=SEM)
    assert not mixed.sem_background
    covered = ["circle", "square"]  # every class is a category of the main set
    main = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"], sem_classes=covered)
    assert build_training_set(main, [], sem_classes=covered).sem_background


def _ground_pngs(main: CocoDataset, root: Path, name_of_one: str = "ground") -> SourceConfig:
    """The first images of ``main`` with a PNG that labels only ground (bottom quarter, id 1)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(NUM_PNG):
        info = main.image_info(index)
        image = Image.open(info["path"])
        image.save(root / "images" / info["file_name"])
        png = np.zeros((image.height, image.width), np.uint8)
        png[3 * image.height // 4 :] = 1
        Image.fromarray(png, mode="L").save(root / "masks" / f"{Path(info['file_name']).stem}.png")
    return SourceConfig(
        images=str(root / "images"),
        sem_masks=str(root / "masks"),
        tasks=["sem"],
        class_names=[name_of_one],
    )


def test_coco_and_png_sources_give_the_heads_own_ids(
    shapes_paths: dict[str, Path], tmp_path: Path
) -> None:
    plain = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"])
    main = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"], sem_classes=SEM)
    assert main.sem_class_names == SEM and plain.sem_class_names == plain.class_names
    for index in range(3):
        before, after = plain.original_sem_seg(index), main.original_sem_seg(index)
        # circle 1 -> 2, square 2 -> 3, triangle 3 -> 0, background 0 -> 255 (ground unknown)
        expected = np.array([255, 2, 3, 0] + [0] * 251 + [255])[before]
        assert np.array_equal(after, expected)
    mixed = build_training_set(main, [_ground_pngs(main, tmp_path / "a")], sem_classes=SEM)
    _, target = mixed[len(main)]
    # The PNG labels ground only: its background may be circle or square, so it is ignored.
    assert set(torch.unique(target["sem_seg"]).tolist()) == {1, 255}
    assert set(target) == {"sem_seg", "image_id", "orig_size", "image_size"}


def test_names_the_head_does_not_know_are_errors(
    shapes_paths: dict[str, Path], tmp_path: Path
) -> None:
    main = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"], sem_classes=SEM)
    sky = _ground_pngs(main, tmp_path / "sky", name_of_one="sky")
    with pytest.raises(DataError, match=r"masks.*'sky'.*model\.sem\.class_names"):
        build_training_set(main, [sky], sem_classes=SEM)
    # A COCO set of ground polygons may label sem only; boxes of an unknown category may not.
    data: dict[str, Any] = json.loads(Path(shapes_paths["train_ann"]).read_text())
    data["categories"] = [{"id": 1, "name": "ground"}]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] == 1]
    path = tmp_path / "ground.json"
    path.write_text(json.dumps(data))
    images = str(shapes_paths["train_images"])
    sem_only = SourceConfig(ann=str(path), images=images, tasks=["sem"])
    mixed = build_training_set(main, [sem_only], sem_classes=SEM)
    _, target = mixed[len(main)]
    assert set(torch.unique(target["sem_seg"]).tolist()) <= {1, 255}
    with_boxes = SourceConfig(ann=str(path), images=images, tasks=["det", "sem"])
    with pytest.raises(DataError, match=r"ground\.json.*'ground'.*leave 'det'"):
        build_training_set(main, [with_boxes], sem_classes=SEM)


def test_model_semantic_head_has_its_own_width(shapes_paths: dict[str, Path]) -> None:
    cfg = ModelConfig(tasks=["det", "sem"], fpn_channels=16)
    cfg.sem.class_names = ["ground", "sky", "circle", "square"]
    classes = ClassSpec.from_data(["circle", "square", "triangle"], [1, 3, 7], cfg.sem.class_names)
    model = build_model(cfg, classes).train()
    main = CocoDataset(
        shapes_paths["train_ann"], shapes_paths["train_images"], sem_classes=cfg.sem.class_names
    )
    images, targets = Collator(32)([main[0], main[1]])
    assert model.heads["sem"].predictor.out_channels == 5
    assert model.heads["det"].cls_logits.out_channels == 3
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["sem/ce"] > 0


def test_train_eval_predict_with_a_stuff_class(
    shapes_paths: dict[str, Path], tmp_path: Path
) -> None:
    from visionmtl.api import Predictor
    from visionmtl.engine.trainer import train

    main = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"])
    png = _ground_pngs(main, tmp_path / "png")
    val = CocoDataset(shapes_paths["val_ann"], shapes_paths["val_images"])
    val_png = _ground_pngs(val, tmp_path / "val_png")
    source = (
        f"{{images: {png.images}, sem_masks: {png.sem_masks}, tasks: [sem], class_names: [ground]}}"
    )
    overrides = tiny_train_overrides(shapes_paths, tmp_path / "run") + [
        "train.epochs=1",
        f"model.sem.class_names=[{', '.join(SEM)}]",
        f"data.extra_sources=[{source}]",
        "model.backbone.name=resnet10t",
        # mIoU from PNG class maps that label ground (COCO val cannot); AP from COCO val
        f"data.val_sem_images={val_png.images}",
        f"data.val_sem_masks={val_png.sem_masks}",
        "data.val_sem_class_names=[ground]",
    ]
    metrics = train(load_config(None, overrides), tmp_path / "run")
    per_class = metrics["per_class"]
    assert {"ground", "circle", "square"} <= {k for k, v in per_class.items() if "IoU" in v}
    assert per_class["ground"]["IoU"] is not None  # ground truth for ground exists
    assert "IoU" not in per_class["triangle"] and "bbox_AP" in per_class["triangle"]
    assert metrics["bbox_AP"] is not None and metrics["mIoU"] is not None
    # tools/eval.py on the checkpoint scores the same two sets the same way
    from tools.eval import main as eval_main

    assert eval_main([str(tmp_path / "run" / "best.pt"), "--out", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["mIoU"] == pytest.approx(metrics["mIoU"])
    assert again["bbox_AP"] == pytest.approx(metrics["bbox_AP"])
    predictor = Predictor.from_checkpoint(tmp_path / "run" / "best.pt")
    image = np.asarray(Image.open(main.image_info(0)["path"]).convert("RGB"))
    result = predictor(image)[0]
    # No source labels background (the PNGs label ground only, COCO no ground): none predicted.
    assert result.sem_class_names == {8: "ground", 1: "circle", 3: "square"}
    assert result.sem_seg is not None and result.sem_seg.shape == image.shape[:2]
    assert set(np.unique(result.sem_seg).tolist()) <= set(result.sem_class_names)
    assert predictor.model.heads["sem"].predictor.out_channels == 4


def test_config_rejects_repeated_semantic_class_names() -> None:
    with pytest.raises(
        ConfigError, match=r"data\.val_sem_images: a semantic PNG validation set needs"
    ):
        load_config(None, ["data.val_sem_masks=masks/"])

    with pytest.raises(ConfigError, match=r"model\.sem\.class_names"):
        load_config(None, ["model.sem.class_names=[road, road]"])
    assert load_config(None, ["model.sem.class_names=[road, sky]"]).model.sem.class_names == [
        "road",
        "sky",
    ]
    with pytest.raises(ConfigError, match="other than 'background'"):
        load_config(None, ["model.sem.class_names=[background, road]"])
