"""Find bad COCO data before training: every problem named with its annotation, image file and a fix.

:func:`check_coco` never raises on malformed content (only :class:`~visionmtl.data.DataError` when
the JSON file is missing or not JSON); it returns a :class:`CheckReport` of :class:`Problem` s.
:func:`clean_annotations` applies an ``on_invalid`` policy (one of :data:`visionmtl.config.ON_INVALID`: "error" |
"skip" | "fix") to the data given its report.

:func:`check_png_set` checks a semantic PNG label set (readable maps of their images' sizes, declared
ids). Modules: ``checker`` (the pass over the JSON), ``png``, ``cleaning`` (the policies), ``problems`` (what a
check reports) and the private ``_values`` (checks of single numbers, polygons, RLE and image files).
"""

from visionmtl.data.checks.checker import check_coco, check_coco_data, read_coco_json
from visionmtl.data.checks.cleaning import clean_annotations
from visionmtl.data.checks.png import check_png_set
from visionmtl.data.checks.problems import CheckReport, Problem

__all__ = [
    "CheckReport",
    "Problem",
    "check_coco",
    "check_coco_data",
    "check_png_set",
    "clean_annotations",
    "read_coco_json",
]
