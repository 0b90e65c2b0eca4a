"""train.ema: the moving average is what validation scores and best.pt keeps; resume is exact."""

import json
from pathlib import Path

import torch

from tests.conftest import tiny_train_overrides
from visionmtl.config import load_config
from visionmtl.engine.trainer import train


def _cfg(paths: dict, out: Path):  # type: ignore[no-untyped-def]
    overrides = tiny_train_overrides(paths, out) + ["train.ema=0.9", "train.eval_every=2"]
    return load_config(None, overrides)


def test_ema_is_validated_saved_and_resumed_exactly(shapes_paths: dict, tmp_path: Path) -> None:
    from tools import eval as eval_tool

    straight = tmp_path / "straight"
    train(_cfg(shapes_paths, straight), straight)
    last = torch.load(straight / "last.pt", weights_only=True)
    ema = {key.removeprefix("module."): value for key, value in last["ema"].items()}
    assert ema.keys() == last["model"].keys()
    assert any(
        not torch.equal(ema[key], last["model"][key]) for key in ema if ema[key].is_floating_point()
    )
    # One validation (epoch 2): best.pt holds the averaged weights it scored, and tools/eval.py
    # gives the recorded numbers for it.
    best = torch.load(straight / "best.pt", weights_only=True)
    assert all(torch.equal(best["model"][key], ema[key]) for key in ema)
    out = tmp_path / "eval.json"
    assert eval_tool.main([str(straight / "best.pt"), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(best["metrics"])

    resumed = tmp_path / "resumed"
    assert train(_cfg(shapes_paths, resumed), resumed, stop_after_steps=4)["interrupted"]
    train(_cfg(shapes_paths, resumed), resumed, resume=True)
    again = torch.load(resumed / "last.pt", weights_only=True)["ema"]
    assert all(torch.equal(again[key], last["ema"][key]) for key in last["ema"])


def test_ema_turned_on_when_resuming_a_run_without_it(shapes_paths: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    plain = load_config(None, tiny_train_overrides(shapes_paths, out) + ["data.val_ann="])
    assert train(plain, out, stop_after_steps=2)["interrupted"]
    assert "ema" not in torch.load(out / "last.pt", weights_only=True)
    with_ema = load_config(
        None, tiny_train_overrides(shapes_paths, out) + ["data.val_ann=", "train.ema=0.9"]
    )
    train(with_ema, out, resume=True)
    assert "ema" in torch.load(out / "last.pt", weights_only=True)
