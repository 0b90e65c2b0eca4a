"""Inference latency as users see it: one image at batch 1 over a data set's decoded images."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def median_latency_ms(
    predictor: Callable[[Any], Any],
    dataset: Any,
    on_output: Callable[[int, Any], None] | None = None,
) -> float | None:
    """Median milliseconds per image of ``predictor(array)`` over ``dataset.load_image(i)`` (a
    decoded RGB array ``[H, W, 3]`` uint8; decoding is not timed); None for an empty data set.

    ``on_output(index, output)``, when given, receives each output after its call is timed (e.g. to
    evaluate the same predictions)."""
    times_ms = []
    for index in range(len(dataset)):
        array = dataset.load_image(index)
        start = time.perf_counter()
        output = predictor(array)
        times_ms.append((time.perf_counter() - start) * 1000.0)
        if on_output is not None:
            on_output(index, output)
    return statistics.median(times_ms) if times_ms else None


def checkpoint_latency_ms(checkpoint: Path, device: torch.device) -> float | None:
    """Median milliseconds per validation image at batch 1 through :class:`Predictor` (decoded RGB
    array to predictions at the original size) over the config's COCO validation set, else its
    semantic PNG validation set; None without either."""
    from visionmtl.api import Predictor
    from visionmtl.data import CocoDataset
    from visionmtl.evaluation.validation import semantic_png_val_set

    predictor = Predictor.from_checkpoint(checkpoint, device=device, batch_size=1)
    data = predictor.cfg.data
    if data.val_ann:
        return median_latency_ms(predictor, CocoDataset(data.val_ann, data.val_images))
    png = semantic_png_val_set(predictor.cfg, predictor.model.classes)
    return None if png is None else median_latency_ms(predictor, png)
