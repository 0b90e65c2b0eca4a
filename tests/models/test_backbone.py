"""Backbone levels by stride across timm families, weights loading and its errors."""

import pytest
import timm
import torch

from tests.conftest import SHARED_WEIGHTS
from visionmtl.models import BackboneError, PyramidNeck, TimmBackbone


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
