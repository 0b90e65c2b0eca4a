"""visionmtl advise: a probe within its budget, a recommendation, files that never overwrite."""

import json
from pathlib import Path

import pytest

from tests.conftest import tiny_train_overrides
from visionmtl.commands import main


def test_advise_runs_within_budget_and_recommends(
    shapes_paths: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "advice"
    out.mkdir()
    (out / "advice.json").write_text("earlier advice\n")  # must survive
    overrides = tiny_train_overrides(shapes_paths, tmp_path / "unused")
    args = ["advise", "configs/shapes_demo.yaml", "--minutes", "0.3", "--steps", "12"]
    code = main([*args, "--every", "2", "--out", str(out), "--set", *overrides])
    printed = capsys.readouterr().out
    assert code == 0
    assert "recommendation: share one network" in printed or "train apart" in printed
    assert "| fixed/hard |" in printed and "--set mtl.method=" in printed
    assert (out / "advice.json").read_text() == "earlier advice\n"
    saved = json.loads((tmp_path / "advice2" / "advice.json").read_text())
    probe = saved["probe"]
    # The budget bounds the probe (one step may run past it), data building included.
    assert 0 < probe["probe_steps"] <= 12 and probe["seconds"] <= probe["budget_seconds"] + 10
    assert any("affinity/det>sem" in record for record in saved["records"])
    assert saved["advice"]["method"] in {"fixed", "cagrad"}
    assert (tmp_path / "advice2" / "advice.md").is_file()
    assert not (tmp_path / "unused").exists()  # the probe writes no run directory


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--minutes", "0"], "--minutes"),
        (["--set", "model.tasks=[det]"], "two tasks"),
        (["--set", "mtl.nope=1"], "nope"),
    ],
)
def test_advise_rejects_bad_input(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["advise", "configs/shapes_demo.yaml", "--out", str(tmp_path), *extra])
    assert code == 2 and message in capsys.readouterr().err
