"""Merge evaluator outputs and render them as plain-text tables for a terminal."""

from __future__ import annotations

from typing import Any

MISSING = "-"
# Each task's headline metric: best.pt is chosen on their mean, and the epoch lines print them.
MAIN_METRICS = ("bbox_AP", "segm_AP", "mIoU")


def merge_metrics(*metric_dicts: dict[str, Any]) -> dict[str, Any]:
    """Merge evaluator results into one dict.

    Top-level metrics are combined (a later dict wins on a repeated key); ``per_class`` entries
    are merged by class name, so detection and semantic metrics of "person" share one row.
    Classes keep the order in which they first appear (semantic results add "background").
    """
    merged: dict[str, Any] = {}
    per_class: dict[str, dict[str, Any]] = {}
    for metrics in metric_dicts:
        for key, value in metrics.items():
            if key == "per_class":
                for class_name, class_metrics in value.items():
                    per_class.setdefault(class_name, {}).update(class_metrics)
            else:
                merged[key] = value
    if per_class:
        merged["per_class"] = per_class
    return merged


def _format_value(value: Any) -> str:
    """Floats with 4 decimals, None as '-', anything else as str()."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return MISSING if value != value else f"{value:.4f}"  # NaN != NaN
    return str(value)


def render_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """A table with the first column left-aligned and the others right-aligned.

    Plain text (default): a header, a dashed rule, then the rows, columns two spaces apart, no
    trailing spaces. ``markdown``: a GitHub-flavoured markdown table."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def render(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    separator = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), separator, *(render(row) for row in rows)])


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """Render summary metrics and a per-class table as plain text.

    Args:
        metrics: flat metrics (e.g. ``bbox_AP``, ``mIoU``) plus an optional ``per_class``
            ``{class_name: {metric: value}}``; columns are the union of the per-class keys.
    """
    summary = {key: value for key, value in metrics.items() if key != "per_class"}
    sections: list[str] = []
    if summary:
        rows = [[key, _format_value(value)] for key, value in summary.items()]
        sections.append(render_table(["metric", "value"], rows))
    per_class: dict[str, dict[str, Any]] = metrics.get("per_class") or {}
    if per_class:
        columns: list[str] = []
        for class_metrics in per_class.values():
            columns += [key for key in class_metrics if key not in columns]
        rows = [
            [name, *(_format_value(class_metrics.get(column)) for column in columns)]
            for name, class_metrics in per_class.items()
        ]
        sections.append(render_table(["class", *columns], rows))
    return "\n\n".join(sections)
