"""Inference latency as users see it: Predictor at batch 1 over a data set's decoded images."""

from __future__ import annotations

import statistics
import time
from typing import Any


def median_latency_ms(predictor: Any, dataset: Any) -> float | None:
    """Median milliseconds per image of ``predictor(array)`` (decoded RGB array to predictions at
    the original size) over ``dataset.load_image(i)``; None for an empty data set."""
    times_ms = []
    for index in range(len(dataset)):
        array = dataset.load_image(index)
        start = time.perf_counter()
        predictor(array)
        times_ms.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times_ms) if times_ms else None
