"""User-facing API: Predictor, OnnxPredictor, Result, overlays."""

from visionmtl.api.instance_masks import InstanceMasks
from visionmtl.api.io import InputError, load_rgb
from visionmtl.api.onnx_predictor import OnnxPredictor
from visionmtl.api.predictor import Predictor
from visionmtl.api.result import Result
from visionmtl.api.sources import Frame
from visionmtl.api.visualize import draw_result, image_grid

__all__ = [
    "Frame",
    "InputError",
    "InstanceMasks",
    "OnnxPredictor",
    "Predictor",
    "Result",
    "draw_result",
    "image_grid",
    "load_rgb",
]
