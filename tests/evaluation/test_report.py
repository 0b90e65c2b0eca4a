"""Tests for visionmtl/evaluation/report.py."""

from __future__ import annotations

from visionmtl.evaluation.report import format_metrics_table, merge_metrics


def test_merge_and_format() -> None:
    detection = {
        "bbox_AP": 0.5,
        "bbox_APl": None,
        "per_class": {"cat": {"bbox_AP": 0.25, "bbox_AP50": 0.75}, "dog": {"bbox_AP": None}},
    }
    semantic = {
        "mIoU": 0.6,
        "pixel_acc": 0.9,
        "per_class": {"background": {"IoU": 0.95}, "cat": {"IoU": 0.4}, "dog": {"IoU": 0.45}},
    }
    merged = merge_metrics(detection, semantic)
    assert merged["mIoU"] == 0.6 and merged["bbox_AP"] == 0.5
    assert merged["per_class"]["cat"] == {"bbox_AP": 0.25, "bbox_AP50": 0.75, "IoU": 0.4}
    assert merged["per_class"]["background"] == {"IoU": 0.95}
    assert detection["per_class"]["cat"] == {"bbox_AP": 0.25, "bbox_AP50": 0.75}  # inputs untouched

    table = format_metrics_table(merged)
    lines = table.splitlines()
    assert any(line.split() == ["bbox_AP", "0.5000"] for line in lines)
    assert any(line.split() == ["bbox_APl", "-"] for line in lines)
    header = next(line for line in lines if line.startswith("class"))
    assert header.split() == ["class", "bbox_AP", "bbox_AP50", "IoU"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(header) + 2 :]}
    assert rows["cat"] == ["0.2500", "0.7500", "0.4000"]
    assert rows["background"] == ["-", "-", "0.9500"]
    assert rows["dog"] == ["-", "-", "0.4500"]


def test_format_without_per_class() -> None:
    assert format_metrics_table({"mIoU": 0.5}).splitlines()[-1].split() == ["mIoU", "0.5000"]
