"""Cross-stitch sharing: per-task pyramids mixed per level, trained end to end."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_train_overrides
from visionmtl.config import ConfigError, ModelConfig, load_config
from visionmtl.models import CrossStitchNeck, PyramidNeck, build_model
from visionmtl.models.summary import model_summary
from visionmtl.structures import ClassSpec

CHANNELS, STRIDES = [8, 16, 32], [8, 16, 32]


def backbone_maps() -> list[torch.Tensor]:
    """Maps of a 64 px image at strides 8, 16, 32: [2, C, 64 / s, 64 / s]."""
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(2, channels, 64 // stride, 64 // stride, generator=generator)
        for channels, stride in zip(CHANNELS, STRIDES, strict=True)
    ]


@pytest.mark.parametrize("tasks,self_weight", [(["det", "sem", "inst"], 1.0), (["sem"], 0.9)])
def test_identity_mixing_gives_each_task_its_own_fpn(tasks: list[str], self_weight: float) -> None:
    # One task starts at weight 1 whatever the diagonal: a plain FPN.
    torch.manual_seed(0)
    neck = CrossStitchNeck(CHANNELS, STRIDES, 16, tasks, self_weight=self_weight)
    features = backbone_maps()
    pyramids = neck(features)
    assert list(pyramids) == tasks and neck.strides == [8, 16, 32, 64, 128]
    for task in tasks:
        alone = PyramidNeck(CHANNELS, STRIDES, 16)
        alone.load_state_dict(neck.branches[task].state_dict())
        torch.testing.assert_close(pyramids[task], alone(features))


def test_mixing_weights_learn_from_the_other_branches() -> None:
    torch.manual_seed(0)
    neck = CrossStitchNeck(CHANNELS, STRIDES, 16, ["det", "sem"])
    torch.testing.assert_close(neck.alphas[0], torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
    sum(level.square().mean() for level in neck(backbone_maps())["det"]).backward()
    for alpha in neck.alphas:
        assert alpha.grad[0, 0] != 0 and alpha.grad[0, 1] != 0  # det reads det and sem
        assert torch.all(alpha.grad[1] == 0)  # sem's maps are not in the loss
    # The sem branch learns through det's reads of it.
    assert neck.branches["sem"].fpn.layer_blocks[0][0].weight.grad.abs().sum() > 0


def test_shared_parameters_are_backbone_and_mixing_weights() -> None:
    cfg = ModelConfig(tasks=["det", "sem"], fpn_channels=16)
    model = build_model(cfg, ClassSpec.numbered(2), sharing="cross_stitch")
    shared = {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in model.neck.alphas.parameters()} <= shared
    assert not shared & {id(p) for p in model.neck.branches.parameters()}
    hard = build_model(cfg, ClassSpec.numbered(2))
    expected = [*hard.backbone.parameters(), *hard.neck.parameters()]
    assert [id(p) for p in hard.shared_parameters()] == [id(p) for p in expected]


def test_cross_stitch_trains_with_pcgrad_and_logs_mixing(
    shapes_paths: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from visionmtl.engine.checkpoint import load_model
    from visionmtl.engine.trainer import train

    overrides = tiny_train_overrides(shapes_paths, tmp_path) + [
        "data.val_ann=",
        "data.num_workers=0",
        "train.epochs=1",
        "mtl.sharing=cross_stitch",
        "mtl.method=pcgrad",
    ]
    train(load_config(None, overrides), tmp_path)
    assert "cross-stitch P3: det<-[det " in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in records if "epoch" in r][-1]
    model, _ = load_model(tmp_path / "last.pt")
    assert isinstance(model.neck, CrossStitchNeck)
    weight = model.neck.mixing()["P4"][1][0]  # sem <- det
    assert epoch["stitch/P4/sem<-det"] == pytest.approx(weight, abs=1e-4)
    summary = model_summary(model, 64)
    parts = [v for k, v in summary.items() if k.startswith("params/") and k != "params/total"]
    assert sum(parts) == pytest.approx(summary["params/total"])


def test_cross_stitch_refuses_gradients_on_features() -> None:
    with pytest.raises(ConfigError, match=r"mtl\.grad_on: 'features' needs one pyramid"):
        load_config(None, ["mtl.sharing=cross_stitch", "mtl.grad_on=features"])
