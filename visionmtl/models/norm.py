"""BatchNorm conversions of a built model (timm's, which know timm's norm + activation layers)."""

from __future__ import annotations

from timm.layers import convert_sync_batchnorm
from torch import nn


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm synchronised across processes (``train.sync_bn``).

    timm's converter, not ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``: timm's
    ``BatchNormAct2d`` (BatchNorm + activation in one module: MobileNet, EfficientNet, RegNet...)
    subclasses ``BatchNorm2d``, and torch's converter turns it into a plain ``SyncBatchNorm``,
    whose forward skips the activation (51 of them in mobilenetv2_100). timm's makes it a
    ``SyncBatchNormAct``. Parameters and statistics are shared with ``model``'s modules, which
    the conversion replaces in place; frozen BatchNorm is left as it is."""
    return convert_sync_batchnorm(model)
