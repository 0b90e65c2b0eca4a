"""Task heads: each has forward(features) -> outputs, loss(outputs, targets, padded_shape), postprocess."""

from visionmtl.models.heads.detection import FCOSHead
from visionmtl.models.heads.instance import MaskHead
from visionmtl.models.heads.semantic import SemanticFPNHead

__all__ = ["FCOSHead", "MaskHead", "SemanticFPNHead"]
