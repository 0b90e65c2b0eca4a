"""visionmtl: one network for object detection and segmentation."""

import os

__version__ = "0.1.0"

# albumentations asks the internet for a newer version of itself on import (a blocking HTTPS
# request, seconds where there is no network, in every process and loader worker): never at run
# time from here. A user who sets the variable keeps their own value.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def __getattr__(name: str):
    # Lazy: `import visionmtl` stays cheap, `from visionmtl import Predictor` pulls in torch.
    if name == "Predictor":
        from visionmtl.api.predictor import Predictor

        return Predictor
    if name == "OnnxPredictor":  # needs onnxruntime (pip install visionmtl[export])
        from visionmtl.api.onnx_predictor import OnnxPredictor

        return OnnxPredictor
    raise AttributeError(f"module 'visionmtl' has no attribute {name!r}")


__all__ = ["OnnxPredictor", "Predictor", "__version__"]
