"""Markdown for the multi-task report (:mod:`benchmarks.mtl_report`): task metrics with
relative changes, the cost / delta_m table, and a plain list of where multi-task training hurt."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from visionmtl.evaluation.report import render_table

TOGETHER = "single-task models together"


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.1%}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return render_table(header, rows, markdown=True).splitlines()


def _spread(row: Mapping[str, Any], key: str) -> str:
    """`` ± std`` of a metric over the row's seeds, or nothing for one seed."""
    std = row.get("std", {}).get(key)
    return "" if std is None else f" ± {std:.4f}"


def _baseline_row(report: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The single-task row ``report["reference"][key]`` comes from."""
    for row in report["single_task"].values():
        if row["metrics"].get(key) == report["reference"][key]:
            return row
    return {}


def format_metrics_table(report: Mapping[str, Any]) -> str:
    """Markdown: one row per task metric, the single-task value, then each multi-task model's
    value with its relative change (means ± standard deviations over seeds where several)."""
    multi = report["multi_task"]
    header = ["task metric", "single-task", *multi]
    rows = []
    for key, base in report["reference"].items():
        cells = [key, _num(base) + _spread(_baseline_row(report, key), key)]
        for row in multi.values():
            value = _num(row["metrics"].get(key)) + _spread(row, key)
            cells.append(f"{value} ({_pct(row['relative_change'].get(key))})")
        rows.append(cells)
    return "\n".join(_table(header, rows))


def format_class_table(report: Mapping[str, Any]) -> str:
    """Markdown: per-class IoU of the semantic baseline and of each multi-task model ("" when
    no model has per-class IoU)."""
    single = [r for r in report["single_task"].values() if r.get("per_class_iou")]
    multi = {n: r for n, r in report["multi_task"].items() if r.get("per_class_iou")}
    if not single:
        return ""
    base = single[0]["per_class_iou"]
    rows = [
        [name, _num(value), *(_num(r["per_class_iou"].get(name)) for r in multi.values())]
        for name, value in base.items()
    ]
    return "\n".join(_table(["class IoU", "single-task", *multi], rows))


def format_cost_table(report: Mapping[str, Any]) -> str:
    """Markdown: delta_m, parameters, inference and training time per model."""
    header = ["model", "delta_m", "params (M)", "infer ms/img", "train s", "wall s"]

    def cost(name: str, row: Mapping[str, Any], delta: str) -> list[str]:
        params = None if row["params"] is None else row["params"] / 1e6
        times = [_num(row[k], 1) for k in ("infer_ms", "train_s", "wall_s")]
        return [name, delta, _num(params, 2), *times]

    rows = [cost(f"single-task {n}", r, "-") for n, r in report["single_task"].items()]
    rows.append(cost(TOGETHER, report["single_task_together"], "0 (reference)"))
    rows += [cost(n, r, _pct(r["delta_m"])) for n, r in report["multi_task"].items()]
    return "\n".join(_table(header, rows))


def format_report(report: Mapping[str, Any]) -> str:
    """The whole report as markdown."""
    settings = ", ".join(f"{k}: {v}" for k, v in report["settings"].items())
    lines = ["# Multi-task report", "", settings, ""]
    if not report.get("complete", True):
        pending = [m for m in report["settings"].get("models", []) if m not in report["multi_task"]]
        lines += [f"**Partial report**: still to train: {', '.join(pending) or 'none'}.", ""]
    lines += ["## Task metrics", ""]
    lines += [
        format_metrics_table(report),
        "",
        "## Cost and delta_m",
        "",
        format_cost_table(report),
    ]
    classes = format_class_table(report)
    if classes:
        lines += ["", "## Per-class IoU", "", classes]
    lines += ["", "## Where multi-task training hurt", ""]
    lines += [f"- {row['hurt']}" for row in report["multi_task"].values()]
    lines += [f"- {name}: FAILED: {error}" for name, error in report["failures"].items()]
    lines += ["", "## Notes", "", *(f"- {note}" for note in report["notes"])]
    return "\n".join(lines)
