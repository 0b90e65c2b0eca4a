"""End to end: train -> checkpoints and run files -> eval tool -> resume; tool errors."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_train_overrides
from tools import eval as eval_tool
from tools import train as train_tool
from visionmtl.config import load_config
from visionmtl.engine.checkpoint import checkpoint_classes, load_checkpoint


def test_run_directory_contents(trained_run: Path) -> None:
    for name in ("config.yaml", "env.json", "last.pt", "best.pt", "metrics.jsonl", "eval.json"):
        assert (trained_run / name).is_file(), name
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "epoch" in r]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all("bbox_AP" in r and "mIoU" in r for r in records)
    metrics = json.loads((trained_run / "eval.json").read_text())
    assert {"bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "mIoU", "per_class"} <= set(metrics)
    assert set(metrics["per_class"]) >= {"circle", "square", "triangle"}
    env = json.loads((trained_run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and "git_commit" in env
    # The run's config is the user's: the class lists derived from the data live in checkpoints.
    assert "category_ids" not in (trained_run / "config.yaml").read_text()
    load_config(trained_run / "config.yaml")
    classes = checkpoint_classes(load_checkpoint(trained_run / "best.pt")[1], "best.pt")
    assert classes.category_ids == (1, 3, 7) and classes.num_classes == 3


def test_checkpoint_is_safe_to_load_and_carries_config(trained_run: Path) -> None:
    raw = torch.load(trained_run / "last.pt", weights_only=True)  # no arbitrary unpickling
    assert raw["epoch"] == 2 and "optimizer" in raw and "rng" in raw
    cfg, payload = load_checkpoint(trained_run / "best.pt")
    assert cfg.model.tasks == ["det", "sem", "inst"] and raw["format_version"] == 2
    assert checkpoint_classes(payload, "best.pt").class_names == ("circle", "square", "triangle")


def test_eval_tool_writes_metrics(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "metrics.json"
    assert eval_tool.main([str(trained_run / "best.pt"), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics["bbox_AP50"] <= 1.0 and 0.0 <= metrics["mIoU"] <= 1.0
    assert "circle" in capsys.readouterr().out


def test_resume_continues_from_last_epoch(
    shapes_paths: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides = tiny_train_overrides(shapes_paths, tmp_path) + [
        "train.epochs=1",
        "train.eval_every=5",
    ]
    assert train_tool.main(["configs/shapes_demo.yaml", "--set", *overrides]) == 0
    assert (
        train_tool.main(
            ["configs/shapes_demo.yaml", "--resume", "--set", *overrides, "train.epochs=2"]
        )
        == 0
    )
    assert "resumed from" in capsys.readouterr().out
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    epochs = [r["epoch"] for r in map(json.loads, lines) if "epoch" in r]
    assert epochs == [1, 2]


def test_tools_turn_bad_input_into_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert train_tool.main(["configs/shapes_demo.yaml", "--set", "train.epoch=3"]) == 2
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
    assert (
        train_tool.main(
            ["configs/shapes_demo.yaml", "--set", f"data.train_ann={tmp_path}/none.json"]
        )
        == 2
    )
    assert "none.json" in capsys.readouterr().err
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert eval_tool.main([str(broken)]) == 2
    assert "broken.pt" in capsys.readouterr().err


def test_bad_annotations_skip_by_default_or_stop_before_training(
    shapes_paths: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = json.loads(Path(shapes_paths["train_ann"]).read_text())
    data["annotations"][0]["category_id"] = 99  # undeclared
    bad_id = data["annotations"][0]["id"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    overrides = tiny_train_overrides(shapes_paths, tmp_path / "run") + [
        f"data.train_ann={bad}",
        "data.val_ann=",
        "train.epochs=1",
    ]
    assert train_tool.main(["configs/shapes_demo.yaml", "--set", *overrides]) == 0
    assert "data: " in capsys.readouterr().out
    listing = (tmp_path / "run" / "data_problems.txt").read_text()
    assert f"annotation {bad_id}" in listing and "99" in listing
    strict = [*overrides, "data.on_invalid=error", f"train.output_dir={tmp_path / 'strict'}"]
    assert train_tool.main(["configs/shapes_demo.yaml", "--set", *strict]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert not (tmp_path / "strict" / "last.pt").exists()


def test_version_1_checkpoint_still_loads(trained_run: Path, tmp_path: Path) -> None:
    """Checkpoints written before the class lists left the config (format 1) keep loading."""
    import yaml

    from visionmtl.engine.checkpoint import load_model

    raw = torch.load(trained_run / "best.pt", weights_only=True)
    config = yaml.safe_load(raw["config"])
    classes = raw.pop("classes")
    config["model"].update(
        num_classes=len(classes["class_names"]),
        class_names=classes["class_names"],
        category_ids=classes["category_ids"],
    )
    raw.update(format_version=1, config=yaml.safe_dump(config))
    torch.save(raw, tmp_path / "v1.pt")
    model, cfg = load_model(tmp_path / "v1.pt")
    assert model.classes == checkpoint_classes(load_checkpoint(trained_run / "best.pt")[1], "x")
    assert cfg == load_checkpoint(trained_run / "best.pt")[0]


def test_version_1_checkpoint_with_own_semantic_classes_or_only_a_class_count(
    trained_run: Path, tmp_path: Path
) -> None:
    """Format 1 kept model.sem.class_names beside the lists; ModelConfig(num_classes=N) alone
    was enough to build and save a model."""
    import yaml

    raw = torch.load(trained_run / "best.pt", weights_only=True)
    config = yaml.safe_load(raw["config"])
    raw.pop("classes")
    config["model"]["sem"]["class_names"] = ["ground", "circle", "square", "triangle"]
    config["model"].update(num_classes=3, class_names=["circle", "square", "triangle"])
    config["model"]["category_ids"] = [1, 3, 7]
    raw.update(format_version=1, config=yaml.safe_dump(config))
    torch.save(raw, tmp_path / "own.pt")
    _, payload = load_checkpoint(tmp_path / "own.pt")
    classes = checkpoint_classes(payload, "own.pt")
    assert classes.sem_names == ("ground", "circle", "square", "triangle")
    assert classes.has_own_sem_classes and classes.category_ids == (1, 3, 7)

    config["model"].update(class_names=[], category_ids=[])
    raw.update(config=yaml.safe_dump(config))
    torch.save(raw, tmp_path / "count.pt")
    _, payload = load_checkpoint(tmp_path / "count.pt")
    assert checkpoint_classes(payload, "count.pt").class_names == ("class1", "class2", "class3")


def test_sync_bn_without_cuda_stops_before_data_loading(tmp_path: Path) -> None:
    from visionmtl.engine.trainer import train
    from visionmtl.errors import ConfigError

    overrides = [
        f"data.train_ann={tmp_path / 'missing.json'}",  # never read: the check comes first
        f"data.train_images={tmp_path}",
        "train.sync_bn=true",
        "train.device=cpu",
    ]
    cfg = load_config(None, overrides)
    with pytest.raises(ConfigError, match=r"train.sync_bn: SyncBatchNorm needs CUDA.*cpu"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
