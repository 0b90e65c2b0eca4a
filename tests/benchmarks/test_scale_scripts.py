"""The scale benchmarks (issue 11): sync counting, synthetic COCO-statistics files, --help."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.data_scale import COCO_CATEGORY_IDS, synthetic_coco
from benchmarks.step_syncs import count_step_syncs
from visionmtl.data import CocoDataset

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_training_step_syncs_do_not_grow_with_the_batch() -> None:
    """Host waits per step are the same at batch 1 and 4 (no per-image reads of device values);
    the count itself is a ceiling that a new per-step .item() would break."""
    one, four = count_step_syncs(1), count_step_syncs(4)
    assert one["syncs"] == four["syncs"], (one, four)
    assert four["syncs"] <= 17, four
    assert four["by_op"].get("aten::_local_scalar_dense", 0) <= 2, four


def test_synthetic_coco_has_coco_statistics_and_loads_clean(tmp_path: Path) -> None:
    path = synthetic_coco(60, tmp_path / "synthetic.json")
    dataset = CocoDataset(path, tmp_path, on_invalid="error")
    assert len(dataset) == 60 and dataset.category_ids == COCO_CATEGORY_IDS
    per_image = sum(len(dataset.annotations(i)) for i in range(60)) / 60
    assert 5 < per_image < 9
    assert not [p for p in dataset.problems if p.severity == "error"]


@pytest.mark.parametrize("script", ["data_scale.py", "inference_floor.py", "step_syncs.py"])
def test_scale_scripts_run_from_any_directory(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "usage" in done.stdout, done.stderr
