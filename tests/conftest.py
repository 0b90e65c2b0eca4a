"""Shared test fixtures: a tiny synthetic shapes data set and the optional shared real data."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.cli import TINY_MODEL
from visionmtl.data import CocoDataset
from visionmtl.data.synthetic import generate_shapes

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT / ".." / "shared"  # real data and weights; absent in a user's fresh clone
SHARED_DATA_DIR = SHARED_DIR / "data"
SHARED_WEIGHTS = SHARED_DIR / "weights" / "mobilenetv2_100.in1k_tv.pth"

# Annotation caches (data.cache) of this test session, and of the tools it starts, stay out of
# the user's ~/.cache.
os.environ["VISIONMTL_CACHE"] = tempfile.mkdtemp(prefix="visionmtl-cache-")


@pytest.fixture(scope="session")
def shapes_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small shapes set (24 train / 8 val images, 64 px): keys train_ann, train_images, val_ann, val_images."""
    return generate_shapes(
        tmp_path_factory.mktemp("shapes"), num_train=24, num_val=8, image_size=64, seed=0
    )


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` next to the repository; the test is skipped where it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip("../shared/data is not available (fresh clone)")
    return SHARED_DATA_DIR.resolve()


@pytest.fixture(scope="session")
def trained_run(shapes_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory from a 2-epoch training of a tiny resnet18 det+sem+inst model on ``shapes_paths``."""
    from visionmtl.config import load_config
    from visionmtl.engine.trainer import train

    output_dir = tmp_path_factory.mktemp("run")
    cfg = load_config(None, tiny_train_overrides(shapes_paths, output_dir))
    train(cfg, output_dir)
    return output_dir


@pytest.fixture(scope="session")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local timm weights file (resnet18, random init): training "from weights" without the hub."""
    import timm
    import torch

    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(timm.create_model("resnet18").state_dict(), path)
    return path


def tiny_train_overrides(paths: dict[str, Path], output_dir: Path) -> list[str]:
    """Config overrides for a seconds-long CPU training on the tiny shapes set."""
    return [
        f"data.train_ann={paths['train_ann']}",
        f"data.train_images={paths['train_images']}",
        f"data.val_ann={paths['val_ann']}",
        f"data.val_images={paths['val_images']}",
        "data.image_size=64",
        "data.batch_size=8",
        "data.num_workers=0",
        *TINY_MODEL,
        "train.epochs=2",
        "train.warmup_iters=2",
        "train.eval_every=1",
        f"train.output_dir={output_dir}",
    ]


# A CamVid-like convention: no background id, 0 is a class, 3 is void.
STREET_IDS = {0: "sky", 1: "ground", 2: "shape"}
VOID = 3
STREET = ["sky", "ground", "shape"]  # model.sem.class_names


def _street_pngs(coco: CocoDataset, root: Path, count: int) -> dict[str, str]:
    """The first ``count`` images of ``coco`` with native-id PNGs: top half sky (0), bottom half
    ground (1), the shapes (2) over both, one void row (3) in the middle."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        info = coco.image_info(index)
        shutil.copy(info["path"], root / "images" / info["file_name"])
        shapes = coco.original_sem_seg(index)
        height = shapes.shape[0]
        png = np.zeros(shapes.shape, np.uint8)
        png[height // 2 :] = 1
        png[(shapes > 0) & (shapes != 255)] = 2
        png[height // 2] = VOID
        Image.fromarray(png, mode="L").save(root / "masks" / f"{Path(info['file_name']).stem}.png")
    return {"images": str(root / "images"), "sem_masks": str(root / "masks")}


@pytest.fixture(scope="session")
def street(shapes_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("street")
    train = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"])
    val = CocoDataset(shapes_paths["val_ann"], shapes_paths["val_images"])
    return {
        "train": _street_pngs(train, root / "train", 8),
        "val": _street_pngs(val, root / "val", 4),
    }
