"""Training curves of a run directory as one picture (``visionmtl plot RUN_DIR``): read from its
``metrics.jsonl`` (:class:`~visionmtl.engine.loggers.RunLogger`), drawn with matplotlib (the
optional ``visionmtl[plots]`` extra)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from visionmtl.engine.loggers import METRICS_FILE
from visionmtl.errors import ConfigError, OutputExistsError, VisionMTLError
from visionmtl.evaluation.report import MAIN_METRICS

CURVES_FILE = "curves.png"

# The panels: title, the key prefix of the step records drawn in it (one line per key).
STEP_PANELS = (
    ("loss per task", "loss/"),
    ("learning rate", "lr"),
    ("task weight", "weight/"),
    ("gradient norm per task", "grad_norm/"),
    ("gradient cosine per task pair", "grad_cos/"),
    ("lookahead affinity i>j (mtl.affinity_every)", "affinity/"),
)
# Epoch records' keys drawn in the validation panel, where the run has them.
# The main metrics (one home: evaluation.report) and two a user watches beside them.
VAL_METRICS = (*MAIN_METRICS, "bbox_AP50", "pixel_acc")


class RunFileError(VisionMTLError):
    """A run directory without readable metric records."""


def read_records(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The step records and the epoch records of ``run_dir/metrics.jsonl``, each sorted by its
    axis, the last record kept where a resumed run wrote a step (or epoch) again."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise RunFileError(
            f"{path}: not found; `visionmtl plot` reads the metrics.jsonl a training writes "
            "(train.loggers must include jsonl)"
        )
    steps: dict[int, dict[str, Any]] = {}
    epochs: dict[int, dict[str, Any]] = {}
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                continue  # the last line of a killed run, cut short: drawn without it
            raise RunFileError(f"{path}:{number}: not a JSON record ({error.msg})") from None
        if "epoch" in record:
            epochs[record["epoch"]] = record
        elif "step" in record:
            steps[record["step"]] = record
    return [steps[k] for k in sorted(steps)], [epochs[k] for k in sorted(epochs)]


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw ``run_dir``'s curves into ``out`` (default ``run_dir/curves.png``, redrawn each call:
    it only shows ``metrics.jsonl``); returns the path. Panels: loss per task, learning rate,
    validation metrics per epoch, task weights, gradient norms, pairwise gradient cosines and
    lookahead task affinities over steps; a panel the run did not log says so."""
    out_path = Path(out) if out else Path(run_dir) / CURVES_FILE
    if out and out_path.exists():  # curves.png is redrawn; a file the user names is not replaced
        raise OutputExistsError(f"{out_path} already exists: choose a new --out file")
    if out_path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
        raise ConfigError(f"--out {out_path}: a .png, .jpg, .pdf or .svg file")
    steps, epochs = read_records(run_dir)
    if not steps and not epochs:
        raise RunFileError(f"{Path(run_dir) / METRICS_FILE}: no records yet")
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(
            "visionmtl plot needs matplotlib: pip install matplotlib (or visionmtl[plots])"
        )
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 4, figsize=(15, 8), constrained_layout=True)
    panels = panel_keys(steps, epochs)
    for axis, (title, x, keys) in zip(axes.flat, panels, strict=False):
        _draw(axis, title, steps if x == "step" else epochs, x, keys)
    for axis in axes.flat[len(panels) :]:
        axis.axis("off")
    figure.suptitle(str(run_dir))
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
    return out_path


def panel_keys(
    steps: list[dict[str, Any]], epochs: list[dict[str, Any]]
) -> list[tuple[str, str, list[str]]]:
    """(title, x axis "step" or "epoch", keys drawn) of the seven panels. Losses come from the step
    records, or from the epoch records where the run logged no steps (``mtl.log_every: 0``)."""
    panels = [
        (title, "step", [k for k in _keys(steps) if k.startswith(prefix)])
        for title, prefix in STEP_PANELS
    ]
    if not panels[0][2]:
        losses = [k for k in _keys(epochs) if k.startswith("loss/")]
        panels[0] = ("loss per task (epoch mean)", "epoch", losses)
    validation = ("validation", "epoch", [k for k in VAL_METRICS if _has(epochs, k)])
    return [*panels[:2], validation, *panels[2:]]


def _keys(records: list[dict[str, Any]]) -> list[str]:
    """Every key of ``records`` in the order first seen."""
    return list(dict.fromkeys(key for record in records for key in record))


def _has(records: list[dict[str, Any]], key: str) -> bool:
    return any(isinstance(record.get(key), int | float) for record in records)


def _draw(axis: Any, title: str, records: list[dict[str, Any]], x: str, keys: list[str]) -> None:
    """One panel: a line per key of ``keys`` against ``x``; a note where there is none."""
    axis.set_title(title)
    axis.set_xlabel(x)
    for key in keys:
        points = [(r[x], r[key]) for r in records if isinstance(r.get(key), int | float)]
        if points:
            xs, ys = zip(*points, strict=True)
            # Markers where points are few (epochs, short runs): a single point draws no line.
            marker = "o" if len(points) <= 30 else None
            axis.plot(xs, ys, marker=marker, label=key.split("/", 1)[-1])
    if keys:
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    else:
        axis.text(0.5, 0.5, "not logged in this run", ha="center", va="center", color="gray")
