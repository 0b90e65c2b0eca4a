"""Tests for the config reference (visionmtl/config/reference.py, ``visionmtl config
--help-fields``): every key documented from the schema's own comments, and docs/config_reference.md
current."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionmtl.commands import main
from visionmtl.config import Config
from visionmtl.config.loading import _dotted_keys
from visionmtl.config.reference import REGENERATE, config_reference, field_comments

ROOT = Path(__file__).resolve().parents[1]


def _rows(text: str) -> dict[str, list[str]]:
    """Dotted key -> the other cells of its table row."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            key, *cells = (cell.strip() for cell in line.strip("|").split(" | "))
            rows[key.strip("`")] = cells
    return rows


def test_every_key_has_a_row_or_a_section() -> None:
    text = config_reference()
    keys = _dotted_keys()
    top = [key for key in keys if "." not in key]
    assert top == ["model", "data", "train", "eval", "mtl"]
    assert set(_rows(text)) == set(keys) - set(top)
    for heading in [*top, "model.backbone", "model.det", "data.extra_sources[]"]:
        assert f"\n## `{heading}`\n" in text
    for key, (_, _, description) in _rows(text).items():
        assert description, f"{key} has no comment in visionmtl/config/schema.py"


def test_rows_carry_the_comment_the_rule_and_the_default() -> None:
    rows = _rows(config_reference())
    assert rows["mtl.cagrad_c"] == [
        "float >= 0",
        "`0.4`",
        "CAGrad conflict-averse radius (0: plain average)",
    ]
    assert rows["data.image_size"] == [
        "int >= 32",
        "`512`",
        "longest side in pixels after resizing",
    ]
    # A comment of several lines above the field, joined; a Literal's values; a quoted default.
    assert rows["train.lr"][2].startswith("Peak learning rate (after warm-up) for the global batch")
    assert rows["train.lr"][2].endswith(
        "scale it linearly with the global batch yourself (README)."
    )
    assert rows["train.amp"][:2] == ["one of `off`, `bf16`, `fp16`", "`'off'`"]
    # A comment inside a statement of several lines; a _rule's text; None as null.
    assert rows["model.backbone.weights"][1:] == [
        "`null`",
        "local timm state dict file (.pth/.safetensors); overrides pretrained",
    ]
    assert "a non-empty, strictly increasing list" in rows["model.backbone.out_strides"][0]
    assert rows["data.extra_sources[].repeat"][:2] == ["int >= 1", "`1`"]
    assert "\\|" in rows["mtl.method"][2]  # a | in a comment does not split the table
    assert field_comments(Config)["model"] == ""


def test_committed_reference_is_current() -> None:
    committed = (ROOT / "docs" / "config_reference.md").read_text(encoding="utf-8")
    assert committed == config_reference(), f"docs/config_reference.md is stale: run `{REGENERATE}`"


def test_config_command_exit_codes(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["config", "--help-fields"]) == 0
    assert capsys.readouterr().out == config_reference()
    out = tmp_path / "reference.md"
    assert main(["config", "--help-fields", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == config_reference()
    assert main(["config"]) == 2  # nothing asked
    assert "give --help-fields" in capsys.readouterr().err
    assert main(["config", "--help-fields", "--out", str(tmp_path / "no" / "x.md")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["config", "--bogus"]) == 2
