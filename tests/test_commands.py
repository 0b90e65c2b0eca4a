"""Tests for the ``visionmtl`` command (visionmtl/commands): subcommand dispatch, exit codes, the
``tools/*.py`` shims, the console-script entry point and ``visionmtl plot``."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionmtl.commands import COMMANDS, main
from visionmtl.engine.curves import panel_keys, read_records

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_lists_every_subcommand() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "visionmtl", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    for name in ("train", "eval", "predict", "export", "check", "plot", "demo"):
        assert f"  {name} " in done.stdout


def test_console_script_is_registered() -> None:
    """setup.py's entry point (installed by `pip install -e .`) runs the same main."""
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("visionmtl") == "visionmtl.commands:main"


def test_unknown_subcommand_and_no_subcommand_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["trian"]) == 2
    assert "unknown subcommand 'trian'" in capsys.readouterr().err
    assert main([]) == 2


def test_subcommand_help_and_usage_errors(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: visionmtl train") and "--exist-ok" in out
    assert main(["eval"]) == 2  # the checkpoint argument is missing: argparse's usage error
    assert "usage: visionmtl eval" in capsys.readouterr().err


def test_tool_shim_is_the_same_command() -> None:
    """`python tools/check_data.py` keeps working and is `visionmtl check` (same function)."""
    from tools.check_data import main as shim_main

    assert shim_main is COMMANDS["check"].main
    done = subprocess.run(
        [sys.executable, "tools/check_data.py", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0 and "--sem-masks" in done.stdout


def test_check_exit_codes_through_the_command(shapes_paths: dict, tmp_path: Path) -> None:
    """0 for a good set, 1 for a set with errors, 2 when it cannot run (missing file)."""
    good = [str(shapes_paths["val_ann"]), str(shapes_paths["val_images"]), "--no-images"]
    assert main(["check", *good]) == 0
    data = json.loads(Path(shapes_paths["val_ann"]).read_text())
    data["annotations"][0]["bbox"] = [0, 0, -5, 3]  # negative width: an error
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    assert main(["check", str(bad), str(shapes_paths["val_images"]), "--no-images"]) == 1
    assert main(["check", str(tmp_path / "none.json"), str(tmp_path)]) == 2


def test_plot_draws_a_run(trained_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the [plots] extra
    out = tmp_path / "curves.png"
    assert main(["plot", str(trained_run), "--out", str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.size == (1500, 800)
    panels = {title: keys for title, _, keys in panel_keys(*read_records(trained_run))}
    assert panels["loss per task"] == ["loss/det", "loss/sem", "loss/inst"]
    assert {"bbox_AP", "segm_AP", "mIoU"} <= set(panels["validation"])
    assert panels["gradient cosine per task pair"]  # the tiny run logs step 0
    assert len(panels) == 7 and not panels["lookahead affinity i>j (mtl.affinity_every)"]
    assert main(["plot", str(trained_run), "--out", str(out)]) == 2  # never replaced


def test_plot_losses_from_epochs_without_step_records(tmp_path: Path) -> None:
    """mtl.log_every: 0 logs no steps: the loss panel draws the epoch means instead; a last
    line cut short by a kill is left out."""
    lines = [json.dumps({"epoch": k, "step": 3 * k, "loss/det": 1 / k}) for k in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"epoch": 3, "st')
    steps, epochs = read_records(tmp_path)
    assert not steps and [r["epoch"] for r in epochs] == [1, 2]
    title, x, keys = panel_keys(steps, epochs)[0]
    assert (x, keys) == ("epoch", ["loss/det"]) and "epoch" in title


def test_plot_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl: not found" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl:2: not a JSON record" in capsys.readouterr().err
    assert not (tmp_path / "curves.png").exists()


def test_read_records_keeps_the_resumed_runs_record(tmp_path: Path) -> None:
    """A resumed run writes steps (and an epoch) again: the last record of each is drawn."""
    lines = [
        {"step": 1, "loss/det": 3.0},
        {"step": 2, "loss/det": 2.0},
        {"epoch": 1, "step": 2, "bbox_AP": 0.1},
        {"step": 2, "loss/det": 1.5},  # after --resume from step 1
        {"epoch": 1, "step": 2, "bbox_AP": 0.2},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    steps, epochs = read_records(tmp_path)
    assert [(r["step"], r["loss/det"]) for r in steps] == [(1, 3.0), (2, 1.5)]
    assert [r["bbox_AP"] for r in epochs] == [0.2]


def test_check_draw_coco_ground_truth_never_overwrites(shapes_paths: dict, tmp_path: Path) -> None:
    args = ["check", str(shapes_paths["val_ann"]), str(shapes_paths["val_images"])]
    out = tmp_path / "gt"
    assert main([*args, "--draw", str(out), "--draw-limit", "3"]) == 0
    first = sorted(out.iterdir())
    assert len(first) == 3 and all(p.name.endswith("_gt.png") for p in first)
    drawn = np.asarray(Image.open(first[0]).convert("RGB"))
    source = Path(shapes_paths["val_images"]) / first[0].name.replace("_gt.png", ".png")
    plain = np.asarray(Image.open(source).convert("RGB"))
    assert drawn.shape == plain.shape and (drawn != plain).any()  # boxes/masks drawn, no legend
    before = {p: p.read_bytes() for p in first}
    assert main([*args, "--draw", str(out), "--draw-limit", "3"]) == 0
    assert len(list(out.iterdir())) == 6 and all(p.read_bytes() == b for p, b in before.items())


def test_check_draw_png_set_with_its_class_names(street: dict, tmp_path: Path) -> None:
    out = tmp_path / "gt"
    args = ["check", "--sem-images", street["val"]["images"], "--sem-masks"]
    args += [street["val"]["sem_masks"], "--ids", "0=sky,1=ground,2=shape", "--ignore-ids", "3"]
    assert main([*args, "--draw", str(out)]) == 0
    pictures = sorted(out.iterdir())
    assert len(pictures) == 4
    with Image.open(pictures[0]) as picture:
        image = Image.open(sorted(Path(street["val"]["images"]).iterdir())[0])
        assert picture.width > image.width  # the legend strip of the classes drawn


def test_check_draw_needs_one_set(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        from visionmtl.commands.check import main as check_main

        check_main(["--config", "x.yaml", "--draw", str(tmp_path)])
    assert exit_.value.code == 2


def test_plot_has_an_affinity_panel_for_runs_that_log_it(tmp_path: Path) -> None:
    records = [{"step": k, "affinity/det>sem": 0.1 * k, "affinity/sem>sem": 0.5} for k in (0, 5)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    panels = {title: keys for title, _, keys in panel_keys(*read_records(tmp_path))}
    affinity = panels["lookahead affinity i>j (mtl.affinity_every)"]
    assert affinity == ["affinity/det>sem", "affinity/sem>sem"]
