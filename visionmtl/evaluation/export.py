"""Result files that other tools read (``tools/eval.py --save-json DIR``).

- ``bbox_results.json``, ``segm_results.json``: the scored predictions in COCO results format
  (``image_id``, ``category_id`` as in the annotation file, ``bbox`` [x, y, w, h] or
  ``segmentation`` RLE with str counts, ``score``), as pycocotools' ``COCO.loadRes``,
  faster-coco-eval and FiftyOne read them. COCOeval of them against the ground truth gives the
  printed AP.
- ``ground_truth.json``: only when the data policy (``data.on_invalid``) dropped or fixed
  annotations of the file: AP is scored on this cleaned ground truth, not on the file.
- ``confusion.json``: the detection and semantic confusion matrices (``confusion_report``),
  and ``confusion.png``, the same drawn row-normalised, where matplotlib is installed (the
  ``plots`` extra).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visionmtl.errors import OutputExistsError
from visionmtl.evaluation.coco_eval import ground_truth_changes
from visionmtl.evaluation.confusion import confusion_report, plot_confusion
from visionmtl.evaluation.evaluate import Evaluation

RESULT_FILES: tuple[str, ...] = (
    "bbox_results.json",
    "segm_results.json",
    "ground_truth.json",
    "confusion.json",
    "confusion.png",
)


def check_fresh(directory: str | Path) -> None:
    """OutputExistsError naming the result files that ``directory`` holds already.

    Results are never overwritten, not even partly (a new ``confusion.json`` beside an old
    ``bbox_results.json`` would pair two evaluations): a new or missing directory, or one without
    these files (e.g. the run directory), is fine."""
    paths = [Path(directory) / name for name in RESULT_FILES]
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise OutputExistsError(
            f"{', '.join(existing)} already exist (results of an earlier evaluation); pass a new "
            "--save-json directory, or move these files away"
        )


def write_results(
    directory: str | Path,
    evaluations: Sequence[Evaluation],
    score_thresh: float = 0.25,
    iou_thresh: float = 0.5,
) -> list[Path]:
    """Write the result files (module docstring) of ``evaluations`` (of one model: at most one
    COCO set and one semantic set) into ``directory``, created if needed; returns their paths.

    ``score_thresh`` / ``iou_thresh`` are the detection confusion matrix's; the COCO results hold
    every scored detection, as AP needs. OutputExistsError if any result file exists already."""
    directory = Path(directory)
    check_fresh(directory)
    coco_part = next((e for e in evaluations if e.coco is not None), None)
    coco = coco_part.coco if coco_part is not None else None
    sem = next((e.sem for e in evaluations if e.sem is not None), None)
    contents: dict[str, Any] = {}
    if coco_part is not None and coco is not None:
        for iou_type in coco.iou_types:
            contents[f"{iou_type}_results.json"] = coco.results(iou_type)
        if any(ground_truth_changes(coco_part.dataset).values()):
            contents["ground_truth.json"] = coco_part.dataset.ground_truth()
    contents["confusion.json"] = confusion_report(coco, sem, score_thresh, iou_thresh)
    if importlib.util.find_spec("matplotlib") is not None:
        contents["confusion.png"] = contents["confusion.json"]
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    try:
        for name, content in contents.items():
            paths.append(_write_new(directory / name, content))
    except BaseException:
        for path in paths:  # ours: a half set would make the next --save-json refuse DIR
            path.unlink(missing_ok=True)
        raise
    return paths


def _write_new(path: Path, content: Any) -> Path:
    """Write ``content`` to the new file ``path`` (JSON, or the confusion matrices drawn for a
    ``.png``); OutputExistsError if it appeared meanwhile; a half-written file is removed."""
    try:
        # "x": fails rather than overwrite a file made meanwhile
        file = path.open("xb" if path.suffix == ".png" else "x")
    except FileExistsError:
        raise OutputExistsError(
            f"{path} appeared while the results were written (another evaluation into "
            f"{path.parent}?); it was left as it is: pass a new --save-json directory"
        ) from None
    try:
        with file:
            if path.suffix == ".png":
                plot_confusion(content, file)
            else:
                json.dump(content, file)
    except BaseException:
        path.unlink()
        raise
    return path
