"""Fine-tuning from a visionmtl checkpoint on data with other classes (model.init_from)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_train_overrides
from visionmtl.engine.checkpoint import CheckpointError, checkpoint_classes, load_checkpoint
from visionmtl.engine.finetune import init_from_checkpoint
from visionmtl.models import build_model
from visionmtl.structures import ClassSpec


def _model_with_classes(run: Path, names: list[str]):  # noqa: ANN202 - (model, cfg)
    cfg, _ = load_checkpoint(run / "best.pt")
    classes = ClassSpec.from_data(names, list(range(1, len(names) + 1)))
    cfg = replace(cfg, model=replace(cfg.model, backbone=replace(cfg.model.backbone, weights=None)))
    torch.manual_seed(1)
    return build_model(cfg.model, classes, cfg.eval, sharing=cfg.mtl.sharing), cfg


def test_class_layers_are_matched_by_name(trained_run: Path) -> None:
    _, payload = load_checkpoint(trained_run / "best.pt")
    old = payload["model"]
    assert checkpoint_classes(payload, "best.pt").class_names == ("circle", "square", "triangle")
    model, cfg = _model_with_classes(trained_run, ["triangle", "star", "circle"])
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_checkpoint(model, cfg, trained_run / "best.pt")
    state = model.state_dict()
    assert torch.equal(state["backbone.body.conv1.weight"], old["backbone.body.conv1.weight"])
    for name, offset in (("heads.det.cls_logits.weight", 0), ("heads.sem.predictor.weight", 1)):
        # new row 0 <- old triangle (2), new row 2 <- old circle (0), new row 1 (star) stays fresh
        assert torch.equal(state[name][0 + offset], old[name][2 + offset])
        assert torch.equal(state[name][2 + offset], old[name][0 + offset])
        assert torch.equal(state[name][1 + offset], fresh[name][1 + offset])
    assert torch.equal(state["heads.sem.predictor.bias"][0], old["heads.sem.predictor.bias"][0])
    assert report.by_class["heads.det.cls_logits.weight"] == 2
    assert report.by_class["heads.sem.predictor.weight"] == 3  # background, triangle, circle
    assert report.kept == [] and "matched by class name" in report.summary("x.pt")


def test_same_classes_copy_everything(trained_run: Path) -> None:
    model, cfg = _model_with_classes(trained_run, ["circle", "square", "triangle"])
    report = init_from_checkpoint(model, cfg, trained_run / "best.pt")
    assert report.by_class == {} and report.kept == []
    _, payload = load_checkpoint(trained_run / "best.pt")
    assert all(torch.equal(v, payload["model"][k]) for k, v in model.state_dict().items())


def test_bad_checkpoints_are_clear_errors(trained_run: Path, tmp_path: Path) -> None:
    model, cfg = _model_with_classes(trained_run, ["circle"])
    with pytest.raises(CheckpointError, match="not found"):
        init_from_checkpoint(model, cfg, tmp_path / "nope.pt")
    cfg_other = replace(
        cfg,
        model=replace(cfg.model, backbone=replace(cfg.model.backbone, name="resnet10t")),
    )
    other = build_model(cfg_other.model, model.classes, cfg_other.eval)
    with pytest.raises(
        CheckpointError, match="backbone is .resnet18. but model.backbone.name is .resnet10t."
    ):
        init_from_checkpoint(other, cfg_other, trained_run / "best.pt")


def test_train_fine_tunes_on_renamed_classes(
    trained_run: Path, shapes_paths: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from visionmtl.config import load_config
    from visionmtl.engine.trainer import train

    data = json.loads(Path(shapes_paths["train_ann"]).read_text())
    for category in data["categories"]:
        if category["name"] == "square":
            category["name"] = "box"
    ann = tmp_path / "renamed.json"
    ann.write_text(json.dumps(data))
    overrides = tiny_train_overrides(shapes_paths, tmp_path / "run") + [
        f"data.train_ann={ann}",
        "data.val_ann=",
        "train.epochs=1",
        f"model.init_from={trained_run / 'best.pt'}",
    ]
    train(load_config(None, overrides), tmp_path / "run")
    out = capsys.readouterr().out
    assert "model.init_from:" in out and "heads.det.cls_logits.weight (2 classes)" in out


def test_fine_tuning_keeps_the_input_statistics_of_its_checkpoint(
    trained_run: Path, tmp_path: Path
) -> None:
    """init_from a model trained with other input statistics: the run normalises as that model
    was trained, not as the backbone's timm default (unless data.mean/std are set)."""
    from visionmtl.config import config_from_yaml, config_to_yaml, load_config
    from visionmtl.engine.trainer import _resolve_run_defaults

    payload = torch.load(trained_run / "best.pt", weights_only=True)
    source_cfg = config_from_yaml(payload["config"])
    grey = replace(source_cfg.data, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    payload["config"] = config_to_yaml(replace(source_cfg, data=grey))
    torch.save(payload, tmp_path / "grey.pt")
    cfg = load_config(None, [f"model.init_from={tmp_path / 'grey.pt'}"])
    resolved = _resolve_run_defaults(cfg, tmp_path / "run", resume=False)
    assert (resolved.data.mean, resolved.data.std) == ([0.5] * 3, [0.25] * 3)
    own = load_config(None, [f"model.init_from={tmp_path / 'grey.pt'}", "data.mean=[0.4,0.4,0.4]"])
    assert _resolve_run_defaults(own, tmp_path / "run", resume=False).data.mean == [0.4] * 3
