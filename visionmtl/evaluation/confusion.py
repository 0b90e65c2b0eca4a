"""Confusion matrices: detections matched to ground-truth boxes, and the semantic pixel matrix that
:class:`SemSegEvaluator` accumulates, as plain data for ``confusion.json``.

Both have ground truth in rows and predictions in columns (as ``SemSegEvaluator``). The detection
matrix follows Ultralytics' ``ConfusionMatrix``: class-agnostic matching at IoU >= 0.5 of the
detections scoring >= 0.25, with a background row and column as its last index.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

from visionmtl.evaluation.coco_eval import CocoEvaluator
from visionmtl.evaluation.semseg_eval import SemSegEvaluator
from visionmtl.structures import BACKGROUND


def match_detections(
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pred_boxes: Tensor,
    pred_labels: Tensor,
    num_classes: int,
    iou_thresh: float = 0.5,
    crowd_boxes: Tensor | None = None,
) -> Tensor:
    """One image's detection confusion matrix.

    Matching ignores classes, so a box found with the wrong class counts as a confusion rather
    than as a miss plus a false positive. It is greedy: the pair with the highest IoU first, each
    box in at most one pair, no pair below ``iou_thresh``.

    Args:
        gt_boxes: [G, 4] xyxy ground-truth boxes; gt_labels: [G] contiguous labels 0..K-1.
        pred_boxes: [P, 4] xyxy detections (already filtered by score); pred_labels: [P].
        num_classes: K.
        crowd_boxes: [C, 4] xyxy crowd regions: an unmatched detection that lies on one
            (intersection >= ``iou_thresh`` of its own area) is no false positive, as COCOeval
            ignores it.

    Returns:
        [K + 1, K + 1] int64 counts, rows ground truth, columns prediction, index K background:
        a matched pair adds to (its GT label, its predicted label), a missed GT box to
        (its label, K), an unmatched detection to (K, its label).
    """
    background = num_classes
    matrix = torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.int64)
    iou = box_iou(gt_boxes.to(torch.float64), pred_boxes.to(torch.float64))  # [G, P]
    gt_index, pred_index = torch.nonzero(iou >= iou_thresh, as_tuple=True)
    order = iou[gt_index, pred_index].argsort(descending=True, stable=True)
    gt_matched = torch.zeros(len(gt_boxes), dtype=torch.bool)
    pred_matched = torch.zeros(len(pred_boxes), dtype=torch.bool)
    for gt, pred in zip(gt_index[order].tolist(), pred_index[order].tolist(), strict=True):
        if gt_matched[gt] or pred_matched[pred]:
            continue
        gt_matched[gt] = pred_matched[pred] = True
        matrix[gt_labels[gt], pred_labels[pred]] += 1
    matrix[:background, background] += torch.bincount(gt_labels[~gt_matched], minlength=num_classes)
    false = ~pred_matched & ~_on_crowd(pred_boxes, crowd_boxes, iou_thresh)
    matrix[background, :background] += torch.bincount(pred_labels[false], minlength=num_classes)
    return matrix


def _on_crowd(boxes: Tensor, crowd: Tensor | None, thresh: float) -> Tensor:
    """[N] bool: boxes [N, 4] covered by a crowd box [C, 4] to at least ``thresh`` of their area."""
    if crowd is None or not len(crowd) or not len(boxes):
        return torch.zeros(len(boxes), dtype=torch.bool)
    boxes, crowd = boxes.to(torch.float64), crowd.to(torch.float64)
    top_left = torch.maximum(boxes[:, None, :2], crowd[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], crowd[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)  # [N, C]
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1).clamp(min=1e-9)
    return (inter / area[:, None] >= thresh).any(dim=1)


def detection_confusion(
    evaluator: CocoEvaluator, score_thresh: float = 0.25, iou_thresh: float = 0.5
) -> Tensor:
    """[K + 1, K + 1] (see :func:`match_detections`) summed over the images ``evaluator``
    processed, against the ground truth it scores AP on (the cleaned data set), from its box
    results with ``score >= score_thresh``.

    Crowd regions are not boxes to find (training ignores them too); a detection left on one
    is not counted, as COCOeval ignores it."""
    label_of = {category_id: k for k, category_id in enumerate(evaluator.category_ids)}
    detections: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for result in evaluator.results("bbox"):
        if result["score"] >= score_thresh:
            detections[result["image_id"]].append(result)
    num_classes = len(label_of)
    matrix = torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.int64)
    for image_id in evaluator.image_ids:
        annotations = [
            a for a in evaluator.coco_gt.imgToAnns[image_id] if a["category_id"] in label_of
        ]
        truth = [a for a in annotations if not a.get("iscrowd", 0)]
        crowd, _ = _boxes_and_labels([a for a in annotations if a.get("iscrowd", 0)], label_of)
        gt_boxes, gt_labels = _boxes_and_labels(truth, label_of)
        pred_boxes, pred_labels = _boxes_and_labels(detections[image_id], label_of)
        matrix += match_detections(
            gt_boxes, gt_labels, pred_boxes, pred_labels, num_classes, iou_thresh, crowd
        )
    return matrix


def _boxes_and_labels(
    entries: Sequence[dict[str, Any]], label_of: Mapping[int, int]
) -> tuple[Tensor, Tensor]:
    """COCO annotations or results -> boxes [N, 4] xyxy float64, contiguous labels [N] int64."""
    boxes = torch.tensor([entry["bbox"] for entry in entries], dtype=torch.float64).reshape(-1, 4)
    labels = [label_of[entry["category_id"]] for entry in entries]
    return box_convert(boxes, "xywh", "xyxy"), torch.tensor(labels, dtype=torch.int64)


def confusion_report(
    coco: CocoEvaluator | None,
    sem: SemSegEvaluator | None,
    score_thresh: float = 0.25,
    iou_thresh: float = 0.5,
) -> dict[str, Any]:
    """The content of ``confusion.json``: ``detection`` (from ``coco``'s box results) and
    ``semantic`` (pixel counts of ``sem``), each ``class_names`` plus ``matrix`` as nested
    lists, ground truth in rows; only the parts whose evaluator is given."""
    report: dict[str, Any] = {"rows": "ground truth", "columns": "prediction"}
    if coco is not None:
        report["detection"] = {
            "class_names": [*coco.class_names, BACKGROUND],
            "score_thresh": score_thresh,
            "iou_thresh": iou_thresh,
            "matrix": detection_confusion(coco, score_thresh, iou_thresh).tolist(),
        }
    if sem is not None:
        # Without a background class (sem.first_class 1) row and column 0 are never filled.
        first = sem.first_class
        report["semantic"] = {
            "class_names": sem.class_names[first:],
            "matrix": sem.confusion_matrix[first:, first:].tolist(),
        }
    return report


def plot_confusion(report: dict[str, Any], file: Any) -> None:
    """Draw ``report``'s matrices (:func:`confusion_report`) side by side into ``file`` (PNG),
    each row normalised to the share of its ground truth, the counts written in the cells.
    Needs matplotlib (the ``plots`` extra)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    parts = [(name, report[name]) for name in ("detection", "semantic") if name in report]
    figure, axes = plt.subplots(1, len(parts), figsize=(6.5 * len(parts), 6), squeeze=False)
    try:
        _draw_matrices(axes[0], parts)
        figure.tight_layout()
        figure.savefig(file, format="png", dpi=110)
    finally:
        plt.close(figure)


def _draw_matrices(axes: Any, parts: list[tuple[str, dict[str, Any]]]) -> None:
    """One heatmap per (name, matrix part) of a confusion report, rows normalised."""
    for axis, (name, part) in zip(axes, parts, strict=True):
        counts = torch.tensor(part["matrix"], dtype=torch.float64)
        shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
        axis.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(part["class_names"]))
        axis.set_xticks(ticks, part["class_names"], rotation=90, fontsize=7)
        axis.set_yticks(ticks, part["class_names"], fontsize=7)
        axis.set(title=f"{name} (rows: ground truth)", xlabel="prediction")
        if len(ticks) <= 20:  # cell counts stay readable up to about 20 classes
            _write_counts(axis, counts, shares)


def _write_counts(axis: Any, counts: Tensor, shares: Tensor) -> None:
    """Each cell's count in it, white on dark cells."""
    for row, column in torch.cartesian_prod(*map(torch.arange, counts.shape)).tolist():
        color = "white" if shares[row, column] > 0.5 else "black"
        text = f"{counts[row, column]:.0f}"
        axis.text(column, row, text, ha="center", va="center", fontsize=8, color=color)
