"""Backbone, pyramid, task heads and the multi-task model."""

from visionmtl.models.backbone import BackboneError, TimmBackbone
from visionmtl.models.build import build_model
from visionmtl.models.cross_stitch import CrossStitchNeck
from visionmtl.models.multitask import MultiTaskModel
from visionmtl.models.neck import PyramidNeck

__all__ = [
    "BackboneError",
    "CrossStitchNeck",
    "MultiTaskModel",
    "PyramidNeck",
    "TimmBackbone",
    "build_model",
]
