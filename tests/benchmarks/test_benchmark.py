"""The peer comparison's command line: the results table and its errors; every benchmark script
runs as ``python benchmarks/<name>.py`` from any directory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import benchmark as benchmark_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
# Each script and an option its --help must list.
SCRIPTS = {
    "benchmark.py": "--config",
    "mtl_report.py": "--config",
    "mixed_precision.py": "--config",
    "data_scale.py": "--images",
    "inference_floor.py": "--sizes",
    "step_syncs.py": "--batch-sizes",
    "semantic_benchmark.py": "--config",
    "gram_buffer.py": "--backbone",
    "eval_engines.py": "--images",
    "sem_loss_memory.py": "--classes",
    "compile_check.py": "--steps",
    "gpu_check.py": "--smoke",
    "loader_throughput.py": "--sizes",
    "loader_checkouts.py": "--runs",
    "step_time.py": "--checkout",
    "onnx_latency.py": "--images",
    "mask_targets.py": "--size",
}


def test_table_reports_missing_metrics_as_dash() -> None:
    rows = {
        "ours": {"bbox_AP": 0.5, "bbox_AP50": 0.8, "mIoU": 0.7, "train_s": 12.0, "infer_ms": 30.0},
        "peer": {"bbox_AP": 0.4, "segm_AP": 0.35, "mIoU": 0.6, "train_s": 20.0, "infer_ms": 50.0},
    }
    text = benchmark_tool.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["model", "box", "AP"]
    assert lines[2].startswith("ours") and "0.5000" in lines[2] and "-" in lines[2].split()
    assert "0.3500" in lines[3]
    markdown = benchmark_tool.format_table(rows, markdown=True)
    assert markdown.splitlines()[1].startswith("|---")


def test_benchmark_tool_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = benchmark_tool.main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.startswith("error:")


def test_scripts_run_by_path_from_another_directory(tmp_path: Path) -> None:
    for script, option in SCRIPTS.items():
        done = subprocess.run(
            [sys.executable, str(REPO_ROOT / "benchmarks" / script), "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{script}: {done.stderr}"
        assert option in done.stdout, script


def test_peer_smoke_run_reports_metrics_and_recipe(
    shapes_paths: dict[str, Path], tmp_path: Path
) -> None:
    """The benchmark's peer path, 2 iterations on the shapes set at 64 px, then its report."""
    import torch

    from benchmarks.peer_recipe import PeerRecipe
    from tests.conftest import tiny_train_overrides
    from visionmtl.config import load_config

    cfg = load_config(None, tiny_train_overrides(shapes_paths, tmp_path / "run"))
    recipe = PeerRecipe(epochs=1, min_size=64, max_size=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: thread synchronisation dominates
    try:
        row = benchmark_tool.run_peer(
            cfg, tmp_path / "peer", torch.device("cpu"), None, recipe, max_iters=2
        )
    finally:
        torch.set_num_threads(threads)
    for key in ("bbox_AP", "segm_AP", "mIoU", "train_s", "infer_ms"):
        assert row[key] is not None, key
    assert (tmp_path / "peer" / "eval.json").is_file()
    settings = {"config": None, "overrides": [], "peer": recipe.to_dict()}
    json_path, md_path = benchmark_tool.write_report(tmp_path, settings, {benchmark_tool.PEER: row})
    report = json.loads(json_path.read_text())
    assert report["settings"]["peer"]["lr"] == 0.0025
    assert report["settings"]["peer"]["min_size"] == 64
    assert report["results"][benchmark_tool.PEER]["infer_ms"] == row["infer_ms"]
    assert "lr 0.0025" in md_path.read_text()


def test_mixed_precision_steps_run_on_a_config_as_loaded(
    shapes_paths: dict, tmp_path: Path
) -> None:
    """The mixed-precision check takes a config straight from YAML (input statistics still
    null) and trains two fp32 steps."""
    import torch

    from benchmarks.mixed_precision import bench_mode
    from tests.conftest import tiny_train_overrides
    from visionmtl.config import load_config

    cfg = load_config(None, [*tiny_train_overrides(shapes_paths, tmp_path), "data.val_ann="])
    assert cfg.data.mean is None
    result = bench_mode(cfg, "off", steps=2, device=torch.device("cpu"))
    assert result["all_losses_finite"] and {"det/cls", "sem/ce"} <= set(result["final_losses"])
