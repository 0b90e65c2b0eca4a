"""Data layer: COCO-format and semantic PNG data sets, partially labelled mixed sources, transforms,
batching and a synthetic shapes generator."""

from visionmtl.data.batching import SIZE_DIVISOR, Collator
from visionmtl.data.checks import CheckReport, Problem, check_coco, clean_annotations
from visionmtl.data.coco import CocoDataset, decode_segmentation
from visionmtl.data.semantic_png import SemanticPngDataset
from visionmtl.data.sources import MixedDataset, TaskFilter, build_training_set
from visionmtl.data.synthetic import generate_shapes
from visionmtl.data.transforms import MEAN, STD, Transform, build_transforms, normalize_image
from visionmtl.errors import DataError
from visionmtl.structures import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "SIZE_DIVISOR",
    "MEAN",
    "STD",
    "CheckReport",
    "CocoDataset",
    "Collator",
    "DataError",
    "MixedDataset",
    "Problem",
    "SemanticPngDataset",
    "TaskFilter",
    "Transform",
    "build_training_set",
    "build_transforms",
    "check_coco",
    "clean_annotations",
    "decode_segmentation",
    "generate_shapes",
    "normalize_image",
]
