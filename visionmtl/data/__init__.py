"""Data layer: COCO-format datasets, transforms, batching and a synthetic shapes generator."""

from visionmtl.data.batching import Collator
from visionmtl.data.coco import IGNORE_INDEX, CocoDataset, decode_segmentation
from visionmtl.data.errors import DataError
from visionmtl.data.synthetic import generate_shapes
from visionmtl.data.transforms import MEAN, STD, Transform, build_transforms, normalize_image

__all__ = [
    "IGNORE_INDEX",
    "MEAN",
    "STD",
    "CocoDataset",
    "Collator",
    "DataError",
    "Transform",
    "build_transforms",
    "decode_segmentation",
    "generate_shapes",
    "normalize_image",
]
