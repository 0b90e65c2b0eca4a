"""Backbone levels by stride across timm families, weights loading and its errors."""

import pytest
import timm
import torch

from tests.conftest import SHARED_WEIGHTS
from visionmtl.models import BackboneError, PyramidNeck, TimmBackbone
from visionmtl.models.backbone import input_normalization, resolve_backbone_defaults


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenetv2_100", "efficientnet_b0", "convnext_tiny"]
)
def test_levels_are_chosen_by_stride(name: str) -> None:
    backbone = TimmBackbone(name, out_strides=[8, 16, 32])
    assert backbone.strides == [8, 16, 32]
    features = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [
        (1, c, 64 // s, 96 // s) for c, s in zip(backbone.channels, [8, 16, 32], strict=True)
    ]


def test_stride_4_level_when_asked() -> None:
    backbone = TimmBackbone("resnet18", out_strides=[4, 8, 16, 32])
    assert backbone.strides == [4, 8, 16, 32]
    assert backbone(torch.randn(1, 3, 64, 64))[0].shape[-1] == 16


def test_unavailable_stride_names_the_option() -> None:
    with pytest.raises(BackboneError, match="out_strides"):
        TimmBackbone("resnet18", out_strides=[8, 64])


def test_unknown_model_name() -> None:
    with pytest.raises(BackboneError, match="model.backbone.name"):
        TimmBackbone("no_such_net_42", out_strides=[8, 16, 32])


def test_missing_weights_file() -> None:
    with pytest.raises(BackboneError, match="file not found"):
        TimmBackbone("resnet18", out_strides=[8, 16, 32], weights="/nonexistent/w.pth")


def test_hub_failure_points_to_weights_option(monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = timm.create_model

    def offline_create(name: str, pretrained: bool = False, **kwargs):  # type: ignore[no-untyped-def]
        if pretrained:
            raise OSError("could not reach the hub")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(BackboneError, match="model.backbone.weights"):
        TimmBackbone("resnet18", out_strides=[8, 16, 32], pretrained=True)


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="../shared weights absent")
def test_local_weights_are_loaded() -> None:
    backbone = TimmBackbone("mobilenetv2_100", out_strides=[8, 16, 32], weights=str(SHARED_WEIGHTS))
    state = torch.load(SHARED_WEIGHTS, map_location="cpu", weights_only=True)
    assert torch.equal(backbone.body.conv_stem.weight, state["conv_stem.weight"])


def test_pyramid_levels() -> None:
    backbone = TimmBackbone("resnet18", out_strides=[8, 16, 32])
    neck = PyramidNeck(backbone.channels, backbone.strides, out_channels=32)
    assert neck.strides == [8, 16, 32, 64, 128]
    levels = neck(backbone(torch.randn(2, 3, 128, 128)))
    assert [tuple(f.shape) for f in levels] == [(2, 32, 128 // s, 128 // s) for s in neck.strides]


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    from visionmtl.config import load_config

    return load_config(None, list(overrides))


HALF = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


@pytest.mark.parametrize(
    ("name", "mean"),
    [
        ("resnet18", (0.485, 0.456, 0.406)),  # ImageNet
        ("mobilenetv1_100", HALF),  # its default tag (ra4_e3600_r224_in1k) declares 0.5 / 0.5
        ("vit_tiny_patch16_224.augreg_in21k", HALF),
        ("vit_base_patch16_clip_224.openai", CLIP_MEAN),
    ],
)
def test_input_statistics_are_the_backbones(name: str, mean: tuple) -> None:
    """From timm's pretrained cfg of the name (and tag), without building a model."""
    declared = timm.get_pretrained_cfg(name)
    assert input_normalization(_cfg(f"model.backbone.name={name}")) == (mean, declared.std)
    explicit = _cfg(f"model.backbone.name={name}", "data.mean=[0.1, 0.2, 0.3]")
    assert input_normalization(explicit) == ((0.1, 0.2, 0.3), declared.std)  # the config wins


def test_unknown_name_or_tag_when_resolving_statistics() -> None:
    with pytest.raises(BackboneError, match="model.backbone.name"):
        input_normalization(_cfg("model.backbone.name=no_such_net_42"))
    with pytest.raises(BackboneError, match="model.backbone.name.*tag"):
        input_normalization(_cfg("model.backbone.name=resnet18.no_such_tag"))
    with pytest.raises(BackboneError, match="set data.mean and data.std"):
        input_normalization(_cfg("model.backbone.name=hf-hub:timm/resnet18.a1_in1k"))
    hub = _cfg("model.backbone.name=hf-hub:x/y", "data.mean=[0.5,0.5,0.5]", "data.std=[1,1,1]")
    assert input_normalization(hub) == (HALF, (1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], (False, 0)),  # from scratch: everything trains
        (["model.backbone.pretrained=true"], (True, 2)),
        (["model.backbone.weights=w.pth"], (True, 2)),
        (["model.init_from=best.pt"], (True, 2)),
        (["model.backbone.pretrained=true", "model.backbone.freeze_bn=false"], (False, 2)),
        (["model.backbone.freeze_at=1"], (False, 1)),
    ],
)
def test_freeze_defaults_follow_loaded_weights(overrides: list, expected: tuple) -> None:
    resolved = resolve_backbone_defaults(_cfg("model.backbone.name=mobilenetv1_100", *overrides))
    backbone = resolved.model.backbone
    assert (backbone.freeze_bn, backbone.freeze_at) == expected
    assert (resolved.data.mean, resolved.data.std) == ([0.5] * 3, [0.5] * 3)
    assert resolve_backbone_defaults(resolved) == resolved  # resolved once, stays so


def _bn_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2_100"])
def test_frozen_batchnorm_neither_learns_nor_tracks(name: str) -> None:
    """Frozen BatchNorm (BatchNormAct2d too, activation kept) computes in training mode what the
    unfrozen model computes in eval mode; its statistics stay and its affine gets no gradient."""
    torch.manual_seed(0)
    plain = TimmBackbone(name, out_strides=[8, 16, 32]).eval()
    torch.manual_seed(0)
    frozen = TimmBackbone(name, out_strides=[8, 16, 32], freeze_bn=True).train()
    images = torch.randn(2, 3, 64, 64)
    before = _bn_state(frozen)
    outputs = frozen(images)
    with torch.no_grad():
        for got, want in zip(outputs, plain(images), strict=True):
            torch.testing.assert_close(got, want)
    sum(o.mean() for o in outputs).backward()
    after = _bn_state(frozen)
    assert before and all(torch.equal(before[k], after[k]) for k in before)
    norms = [m for m in frozen.modules() if type(m).__name__.startswith("Frozen")]
    assert norms and not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert all(not list(m.parameters()) and m.weight.grad is None for m in norms)
    assert "num_batches_tracked" not in " ".join(frozen.state_dict())
    assert all(p.grad is not None for p in frozen.parameters())  # the convolutions still learn


def test_freeze_at_freezes_the_stem_and_first_stage() -> None:
    """freeze_at=2 as Detectron2 / torchvision's trainable_layers=3: conv1 + bn1 and layer1."""
    backbone = TimmBackbone("resnet18", out_strides=[8, 16, 32], freeze_at=2)
    frozen = {n.split(".")[0] for n, p in backbone.body.named_parameters() if not p.requires_grad}
    trained = {n.split(".")[0] for n, p in backbone.body.named_parameters() if p.requires_grad}
    assert frozen == {"conv1", "layer1"} and trained == {"layer2", "layer3", "layer4"}
    # BatchNorm inside the frozen levels is frozen too; the later levels' still trains.
    assert type(backbone.body.layer1[0].bn1).__name__ == "FrozenBatchNorm2d"
    assert isinstance(backbone.body.layer2[0].bn1, torch.nn.BatchNorm2d)
    sum(f.mean() for f in backbone(torch.randn(1, 3, 64, 64))).backward()
    assert all((p.grad is None) != p.requires_grad for p in backbone.parameters())
    assert "levels 1-2 frozen (up to layer1" in backbone.describe_freezing()


def test_freeze_at_counts_the_stem_where_timm_starts_at_stride_4() -> None:
    """ConvNeXt's first feature_info level (stride 4) is stem + stage 0: the stem is level 1."""
    stem = TimmBackbone("convnext_atto", out_strides=[8, 16, 32], freeze_at=1)
    assert {n.split(".")[0] for n, p in stem.body.named_parameters() if not p.requires_grad} == {
        "stem_0",
        "stem_1",
    }
    first = TimmBackbone("convnext_atto", out_strides=[8, 16, 32], freeze_at=2)
    frozen = {n.split(".")[0] for n, p in first.body.named_parameters() if not p.requires_grad}
    assert frozen == {"stem_0", "stem_1", "stages_0"}
    with pytest.raises(BackboneError, match="freeze_at: 6, but 'convnext_atto' has 5 levels"):
        TimmBackbone("convnext_atto", out_strides=[8, 16, 32], freeze_at=6)


def test_freeze_at_past_the_deepest_requested_level_names_the_limit() -> None:
    """resnet18 cut after stride 16 has 4 levels (stem, layer1-3): freeze_at 5 says so."""
    with pytest.raises(BackboneError, match=r"has 4 levels .*out_strides \(16\)"):
        TimmBackbone("resnet18", out_strides=[8, 16], freeze_at=5)
