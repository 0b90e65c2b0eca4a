"""Semantic PNG label sets with their own id conventions (CamVid: 0 = sky, 11 = void), semantic-only
training without COCO files, mixed det/sem sources, and the tools that read PNG sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import STREET, STREET_IDS, VOID, tiny_train_overrides
from visionmtl.config import SourceConfig, load_config
from visionmtl.data import CocoDataset, DataError, build_training_set
from visionmtl.data.checks import check_png_set
from visionmtl.data.semantic_png import declared_png_ids
from visionmtl.data.sources import png_dataset
from visionmtl.evaluation.semseg_eval import SemSegEvaluator

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")


def _source(paths: dict[str, str], **extra: object) -> SourceConfig:
    return SourceConfig(tasks=["sem"], ids=dict(STREET_IDS), ignore_ids=[VOID], **paths, **extra)


def _boxes(shapes_paths: dict[str, Path], repeat: int = 1) -> SourceConfig:
    """The shapes training set as a source of boxes and instance masks only."""
    images = str(shapes_paths["train_images"])
    return SourceConfig(
        ann=str(shapes_paths["train_ann"]), images=images, tasks=["det", "inst"], repeat=repeat
    )


def test_native_ids_map_to_the_head_and_void_is_ignored(street: dict) -> None:
    paths = street["train"]
    dataset = png_dataset(
        paths["images"], paths["sem_masks"], STREET, "test", ids=STREET_IDS, ignore_ids=[VOID]
    )
    native = np.asarray(Image.open(sorted(Path(paths["sem_masks"]).iterdir())[0]))
    mapped = dataset.load_class_map(0)
    # sky 0 -> 1, ground 1 -> 2, shape 2 -> 3, void 3 -> 255; no pixel is background (0)
    assert np.array_equal(mapped, np.array([1, 2, 3, 255])[native])
    assert not dataset.labels_sem_background
    # another head order maps the same PNG by name
    other = png_dataset(
        paths["images"],
        paths["sem_masks"],
        ["shape", "sky", "ground"],
        "t",
        ids=STREET_IDS,
        ignore_ids=[VOID],
    )
    assert np.array_equal(other.load_class_map(0), np.array([2, 3, 1, 255])[native])


def test_an_id_named_background_gives_the_head_a_background(street: dict) -> None:
    """A PNG set that labels every head class may call an id "background" (none of them)."""
    paths = street["train"]
    ids = {0: "background", 1: "ground", 2: "shape"}
    dataset = png_dataset(paths["images"], paths["sem_masks"], ["ground", "shape"], "t", ids=ids)
    assert dataset.labels_sem_background and dataset.label_map[0] == 0
    # a head with a class the set does not label cannot trust its background: ignored
    partial = png_dataset(paths["images"], paths["sem_masks"], STREET, "t", ids=ids)
    assert not partial.labels_sem_background and partial.label_map[0] == 255


def test_undeclared_id_names_file_id_and_pixel_count(street: dict, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    shutil.copytree(street["train"]["sem_masks"], masks)
    first = sorted(masks.iterdir())[0]
    native = np.asarray(Image.open(first)).copy()
    native[:2, :5] = 7  # 10 pixels of an id nobody declared
    Image.fromarray(native, mode="L").save(first)
    dataset = png_dataset(street["train"]["images"], str(masks), STREET, "t", ids=STREET_IDS)
    with pytest.raises(
        DataError, match=rf"{first.name}: .*id 3 \(\d+ pixels\), id 7 \(10 pixels\)"
    ):
        dataset.load_class_map(0)  # void (3) not declared here either
    report = check_png_set(street["train"]["images"], masks, declared_png_ids(ids=STREET_IDS))
    undeclared = [p for p in report.problems if p.code == "undeclared-id"]
    assert len(undeclared) == 8 and not report.ok  # every mask has void; the first also 7
    assert "id 7 (10 pixels)" in undeclared[0].message and undeclared[0].file_name
    declared = declared_png_ids(ids=STREET_IDS, ignore_ids=[VOID])
    report = check_png_set(street["train"]["images"], masks, declared)
    assert [p.code for p in report.errors] == ["undeclared-id"]


def test_check_png_set_finds_size_mismatch_missing_and_unreadable(
    street: dict, tmp_path: Path
) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    shutil.copytree(street["train"]["images"], images)
    shutil.copytree(street["train"]["sem_masks"], masks)
    paths = sorted(masks.iterdir())
    Image.fromarray(np.zeros((5, 7), np.uint8), mode="L").save(paths[0])
    paths[1].unlink()
    paths[2].write_bytes(b"not a png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(paths[3])  # RGB: not class ids
    report = check_png_set(images, masks, declared_png_ids(ids=STREET_IDS, ignore_ids=[VOID]))
    codes = sorted(p.code for p in report.errors)
    assert codes == ["missing-mask", "size-mismatch", "unreadable-mask", "unreadable-mask"]
    assert "class map 000001.png says 7x5" in next(
        p.message for p in report.errors if p.code == "size-mismatch"
    )
    from tools.check_data import main as check_main

    assert check_main(["--sem-images", str(images), "--sem-masks", str(masks)]) == 1
    good = street["train"]
    ids = "0=sky,1=ground,2=shape"
    argv = ["--sem-images", good["images"], "--sem-masks", good["sem_masks"], "--ids", ids]
    assert check_main([*argv, "--ignore-ids", "3"]) == 0
    assert check_main(argv) == 1  # void undeclared


def test_ignored_pixels_are_never_scored() -> None:
    evaluator = SemSegEvaluator(3, ["background", "sky", "road"], background=False)
    target = torch.tensor([[1, 2, 255, 0]])
    evaluator.process([torch.tensor([[1, 2, 1, 1]])], [target])
    metrics = evaluator.evaluate()
    # the 255 and the background pixel are not scored: everything scored is right
    assert metrics["mIoU"] == 1.0 and metrics["pixel_acc"] == 1.0
    assert set(metrics["per_class"]) == {"sky", "road"}


def test_repeat_mixes_sources_in_the_chosen_ratio(
    shapes_paths: dict[str, Path], street: dict
) -> None:
    sources = [_boxes(shapes_paths, repeat=2), _source(street["train"])]
    mixed = build_training_set(None, sources, sem_classes=STREET)
    coco_images = len(CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"]))
    assert len(mixed) == 2 * coco_images + 8
    assert mixed.class_names and not mixed.sem_background
    first, again = mixed[0][1], mixed[coco_images][1]  # the same image, seen twice
    assert int(first["image_id"]) == int(again["image_id"]) and "sem_seg" not in first
    _, png_target = mixed[2 * coco_images]
    assert set(png_target) == {"sem_seg", "image_id", "orig_size", "image_size"}


def _sem_only_overrides(shapes_paths: dict[str, Path], street: dict, out: Path) -> list[str]:
    train, val = street["train"], street["val"]
    source = (
        f"{{images: {train['images']}, sem_masks: {train['sem_masks']}, tasks: [sem], "
        f"ids: {{0: sky, 1: ground, 2: shape}}, ignore_ids: [{VOID}]}}"
    )
    keep = [o for o in tiny_train_overrides(shapes_paths, out) if not o.startswith("data.")]
    return keep + [
        "data.image_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "model.tasks=[sem]",
        "model.backbone.name=resnet10t",
        f"model.sem.class_names=[{', '.join(STREET)}]",
        f"data.extra_sources=[{source}]",
        f"data.val_sem_images={val['images']}",
        f"data.val_sem_masks={val['sem_masks']}",
        "data.val_sem_ids={0: sky, 1: ground, 2: shape}",
        f"data.val_sem_ignore_ids=[{VOID}]",
        "train.epochs=1",
    ]


def test_semantic_only_training_from_pngs_without_coco(
    shapes_paths: dict[str, Path], street: dict, tmp_path: Path
) -> None:
    from tools.eval import main as eval_main
    from visionmtl.api import Predictor
    from visionmtl.engine.trainer import train

    cfg = load_config(None, _sem_only_overrides(shapes_paths, street, tmp_path / "run"))
    assert not cfg.data.train_ann and not cfg.data.val_ann
    metrics = train(cfg, tmp_path / "run")
    assert set(metrics["per_class"]) == set(STREET)  # no background class
    assert metrics["mIoU"] is not None and metrics["pixel_acc"] is not None
    # tools/eval.py scores a PNG folder with the checkpoint's own id map (no config needed)
    val, out = street["val"], tmp_path / "e.json"
    argv = [str(tmp_path / "run" / "best.pt"), "--out", str(out)]
    assert eval_main([*argv, "--sem-images", val["images"], "--sem-masks", val["sem_masks"]]) == 0
    again = json.loads(out.read_text())
    assert again["mIoU"] == pytest.approx(metrics["mIoU"])
    assert set(again["per_class"]) == set(STREET) and "bbox_AP" not in again
    predictor = Predictor.from_checkpoint(tmp_path / "run" / "best.pt")
    result = predictor(Image.open(next(Path(val["images"]).iterdir())).convert("RGB"))[0]
    assert result.sem_class_names == {1: "sky", 2: "ground", 3: "shape"}
    assert set(np.unique(result.sem_seg).tolist()) <= {1, 2, 3} and result.boxes.shape[0] == 0


def test_det_source_and_png_source_each_mask_the_others_loss(
    shapes_paths: dict[str, Path], street: dict
) -> None:
    from visionmtl.config import ModelConfig
    from visionmtl.data import Collator
    from visionmtl.models import build_model
    from visionmtl.structures import ClassSpec

    mixed = build_training_set(
        None, [_boxes(shapes_paths), _source(street["train"])], sem_classes=STREET
    )
    classes = ClassSpec.from_data(mixed.class_names, mixed.category_ids, STREET, False)
    cfg = ModelConfig(tasks=["det", "sem", "inst"], fpn_channels=16)
    model = build_model(cfg, classes).train()
    coco_only = Collator(32)([mixed[0], mixed[1]])
    png_only = Collator(32)([mixed[len(mixed) - 1], mixed[len(mixed) - 2]])
    coco_losses, png_losses = model(*coco_only), model(*png_only)
    assert coco_losses["sem/ce"] == 0 and coco_losses["det/cls"] > 0
    assert png_losses["sem/ce"] > 0 and png_losses["det/cls"] == 0
    assert png_losses["inst/mask"] == 0
    sum(png_losses.values()).backward()  # a step on the PNG images alone is well defined


def test_eval_scores_a_coco_set_and_a_png_set_at_once(
    shapes_paths: dict[str, Path], street: dict, tmp_path: Path
) -> None:
    """A street-like model (boxes from COCO, stuff classes from PNGs, train_ann unset):
    tools/eval.py takes --ann/--images and --sem-images/--sem-masks together."""
    from tools.eval import main as eval_main
    from visionmtl.engine.trainer import train

    train_pngs = street["train"]
    boxes = (
        f"{{ann: {shapes_paths['train_ann']}, images: {shapes_paths['train_images']}, "
        "tasks: [det, inst]}"
    )
    pngs = (
        f"{{images: {train_pngs['images']}, sem_masks: {train_pngs['sem_masks']}, tasks: [sem], "
        f"ids: {{0: sky, 1: ground, 2: shape}}, ignore_ids: [{VOID}]}}"
    )
    overrides = _sem_only_overrides(shapes_paths, street, tmp_path / "run")
    overrides += ["model.tasks=[det,sem,inst]", f"data.extra_sources=[{boxes}, {pngs}]"]
    train(load_config(None, overrides), tmp_path / "run")
    val, out = street["val"], tmp_path / "both.json"
    argv = [str(tmp_path / "run" / "best.pt"), "--out", str(out)]
    argv += ["--ann", str(shapes_paths["val_ann"]), "--images", str(shapes_paths["val_images"])]
    argv += ["--sem-images", val["images"], "--sem-masks", val["sem_masks"]]
    assert eval_main(argv) == 0
    metrics = json.loads(out.read_text())
    assert metrics["bbox_AP"] is not None and metrics["segm_AP"] is not None
    ious = {name for name, values in metrics["per_class"].items() if "IoU" in values}
    assert ious == set(STREET)  # mIoU from the PNG set, not from the COCO set's shapes


def test_check_data_config_mode_checks_every_set(
    shapes_paths: dict[str, Path], street: dict, tmp_path: Path
) -> None:
    """`--config` checks the COCO and PNG sets a config names, with their declared ids."""
    import yaml

    from tools.check_data import main as check_main

    train, val = street["train"], street["val"]
    config = {
        "model": {"tasks": ["sem"], "sem": {"class_names": STREET}},
        "data": {
            "extra_sources": [{**train, "tasks": ["sem"], "ids": STREET_IDS, "ignore_ids": [VOID]}],
            "val_sem_images": val["images"],
            "val_sem_masks": val["sem_masks"],
            "val_sem_ids": STREET_IDS,
            "val_ann": str(shapes_paths["val_ann"]),
            "val_images": str(shapes_paths["val_images"]),
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "report.json"
    assert check_main(["--config", str(path), "--json", str(out)]) == 1  # val PNGs: void undeclared
    reports = json.loads(out.read_text())
    assert len(reports) == 3 and [r["ok"] for r in reports] == [True, True, False]
    with pytest.raises(SystemExit) as bad:
        check_main(["--sem-images", "i", "--sem-masks", "m", "--ids", "0=a", "--class-names", "a"])
    assert bad.value.code == 2
