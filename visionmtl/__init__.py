"""visionmtl: one network for object detection and segmentation."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import visionmtl` stays cheap, `from visionmtl import Predictor` pulls in torch.
    if name == "Predictor":
        from visionmtl.api.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'visionmtl' has no attribute {name!r}")


__all__ = ["Predictor", "__version__"]
