"""The peer comparison's command line: the results table and its errors; every benchmark script
runs as ``python benchmarks/<name>.py`` from any directory."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import benchmark as benchmark_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("benchmark.py", "mtl_report.py", "mixed_precision.py")


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
    for script in SCRIPTS:
        done = subprocess.run(
            [sys.executable, str(REPO_ROOT / "benchmarks" / script), "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{script}: {done.stderr}"
        assert "--config" in done.stdout, script
