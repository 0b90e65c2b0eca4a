"""BatchNorm conversions of a built model: SyncBatchNorm keeps timm's norm + activation layers."""

import copy

import torch
from timm.layers import BatchNormAct2d, SyncBatchNormAct

from visionmtl.models import TimmBackbone
from visionmtl.models.norm import sync_batchnorm


def test_sync_batchnorm_keeps_timm_activations() -> None:
    """Eval mode: SyncBatchNorm then normalises with its running statistics, no process group."""
    torch.manual_seed(0)
    backbone = TimmBackbone("mobilenetv2_100", out_strides=[8, 16, 32]).eval()
    images = torch.randn(2, 3, 64, 64)
    norm_act = sum(isinstance(module, BatchNormAct2d) for module in backbone.modules())
    converted = sync_batchnorm(copy.deepcopy(backbone)).eval()
    torch_converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(backbone)).eval()
    with torch.no_grad():
        expected = backbone(images)
        synced = converted(images)
        plain = torch_converted(images)
    assert norm_act == 51  # BatchNorm + ReLU6 layers of mobilenetv2_100's feature levels
    assert sum(isinstance(m, SyncBatchNormAct) for m in converted.modules()) == norm_act
    assert not any(isinstance(m, BatchNormAct2d) for m in converted.modules())
    for want, got in zip(expected, synced, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # torch's converter makes them plain SyncBatchNorm, which never applies the activation.
    assert not any(torch.allclose(want, got) for want, got in zip(expected, plain, strict=True))
