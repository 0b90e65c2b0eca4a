"""The advisor's probe (``visionmtl advise``): a short training of the config with hard sharing and
equal fixed weights that logs, every few steps, the tasks' gradient norms and cosines on the
shared parameters and their lookahead affinity; and a few timed steps of every candidate design.

Everything runs through the training loop's own step (:func:`visionmtl.engine.trainer.train_step`)
on the config's own data, so the probe measures what the full run would do. Nothing is written
but the advice file; the trainings are thrown away.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from visionmtl.config import Config
from visionmtl.engine.distributed import DistInfo
from visionmtl.engine.rundir import next_free_run_dir
from visionmtl.engine.trainer import (
    build_datasets,
    dataset_classes,
    resolve_device,
    seed_everything,
    train_step,
)
from visionmtl.engine.training_run import Progress, TrainingRun
from visionmtl.models.backbone import resolve_backbone_defaults
from visionmtl.mtl.advice import Advice, Cost, format_advice, recommend
from visionmtl.structures import ClassSpec

# Every balancing method on hard sharing, and the soft-sharing designs with fixed weights.
CANDIDATES: tuple[tuple[str, str], ...] = (
    ("fixed", "hard"),
    ("uncertainty", "hard"),
    ("dwa", "hard"),
    ("famo", "hard"),
    ("gradnorm", "hard"),
    ("pcgrad", "hard"),
    ("cagrad", "hard"),
    ("fixed", "adapters"),
    ("fixed", "cross_stitch"),
)
COST_SHARE = 0.4  # at most this share of the budget times the candidates; the rest probes


class _Records:
    """Stands in for the run's logger: keeps the step records in memory."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def log_step(self, record: dict[str, Any]) -> None:
        self.records.append(record)


@dataclass
class ProbeData:
    """The config (defaults resolved), its training set and classes, built once for every run."""

    cfg: Config
    train_set: Any
    classes: ClassSpec
    device: torch.device


def _candidate(cfg: Config, method: str, sharing: str) -> Config:
    weights = cfg.mtl.weights if method == "fixed" else {}
    return replace(cfg, mtl=replace(cfg.mtl, method=method, sharing=sharing, weights=weights))


def _training(data: ProbeData, cfg: Config, work_dir: Path) -> TrainingRun:
    seed_everything(cfg.train.seed)
    return TrainingRun(
        cfg, data.classes, data.train_set, None, work_dir, False, data.device, DistInfo()
    )


def _batches(run: TrainingRun) -> Iterator[tuple[torch.Tensor, list[dict[str, torch.Tensor]]]]:
    epoch = 0
    while True:
        run.sampler.set_epoch(epoch, 0)
        yield from run.loader
        epoch += 1


def _steps(run: TrainingRun, steps: int, deadline: float) -> list[float]:
    """Run up to ``steps`` training steps before ``deadline`` (``time.perf_counter``); each step's
    seconds, batch loading included."""
    run.model.train()
    progress, seconds = Progress(), []
    start = time.perf_counter()
    for images, targets in _batches(run):
        train_step(run, progress, images, targets)
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        now = time.perf_counter()
        seconds.append(now - start)
        start = now
        if len(seconds) >= steps or now > deadline:
            break
    return seconds


def measure_cost(data: ProbeData, cfg: Config, steps: int, deadline: float, work: Path) -> Cost:
    """Parameters, seconds per step (median after one warm-up step), CUDA peak memory and the
    estimated training time of ``cfg``'s full run (``train.epochs`` epochs)."""
    if data.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(data.device)
    run = _training(data, cfg, work)
    seconds = _steps(run, steps + 1, deadline)
    timed = sorted(seconds[1:] or seconds)
    step_s = timed[len(timed) // 2]
    params = sum(p.numel() for p in run.model.parameters())
    params += sum(p.numel() for p in run.balancer.parameters())
    peak = None
    if data.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(data.device) / 2**20
    full = step_s * cfg.train.epochs * run.iters_per_epoch
    return Cost(params=params, step_s=step_s, peak_mb=peak, full_run_s=full)


def probe_data(cfg: Config) -> ProbeData:
    """Build the training set once (the slow part of starting a run)."""
    cfg = resolve_backbone_defaults(cfg)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    train_set = build_datasets(cfg)
    return ProbeData(
        cfg, train_set, dataset_classes(cfg, train_set), resolve_device(cfg.train.device)
    )


def run_probe(
    cfg: Config,
    minutes: float,
    steps: int,
    every: int,
    cost_steps: int = 2,
    candidates: Sequence[tuple[str, str]] = CANDIDATES,
) -> tuple[list[dict[str, Any]], dict[str, Cost], dict[str, Any]]:
    """(step records of the probe, cost per ``method/sharing`` candidate, facts about the probe).

    The budget ``minutes`` bounds the whole: the candidates' timed steps first (at most
    COST_SHARE of it; a candidate that does not fit is left out), then up to ``steps`` probe
    steps with fixed weights and hard sharing, logging every ``every`` steps."""
    start = time.perf_counter()
    budget = 60.0 * minutes
    data = probe_data(cfg)
    costs: dict[str, Cost] = {}
    with tempfile.TemporaryDirectory(prefix="visionmtl_probe_") as work:
        cost_deadline = start + COST_SHARE * budget
        for method, sharing in candidates:
            if time.perf_counter() > cost_deadline:
                break
            name = f"{method}/{sharing}"
            cand = _candidate(data.cfg, method, sharing)
            cand = replace(cand, mtl=replace(cand.mtl, log_every=0, affinity_every=0))
            costs[name] = measure_cost(data, cand, cost_steps, cost_deadline, Path(work))
        mtl = replace(data.cfg.mtl, log_every=every, affinity_every=every)
        probe_cfg = replace(_candidate(data.cfg, "fixed", "hard"), mtl=mtl)
        run = _training(data, probe_cfg, Path(work))
        recorder = _Records()
        run.logger = recorder  # type: ignore[assignment]  # only log_step is called
        seconds = _steps(run, steps, start + budget)
    facts = {
        "probe_steps": len(seconds),
        "log_every": every,
        "seconds": round(time.perf_counter() - start, 1),
        "budget_seconds": budget,
        "device": str(data.device),
        "full_run_steps": data.cfg.train.epochs * run.iters_per_epoch,
    }
    return recorder.records, costs, facts


ADVICE_FILE = "advice.json"


def advise(
    cfg: Config, out_dir: str | Path, minutes: float, steps: int, every: int
) -> tuple[Advice, Path]:
    """Probe ``cfg`` within ``minutes``, recommend, and write ``advice.json`` (the advice, the
    probe's facts and step records) and ``advice.md`` (the printed tables) into ``out_dir``, or
    into the next free name when that already holds advice (nothing is overwritten)."""
    out = next_free_run_dir(out_dir, taken=lambda path: (path / ADVICE_FILE).exists())
    records, costs, facts = run_probe(cfg, minutes, steps, every)
    advice = recommend(records, cfg.model.tasks, costs)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"advice": advice.to_dict(), "probe": facts, "records": records}
    (out / ADVICE_FILE).write_text(json.dumps(saved, indent=2) + "\n")
    (out / "advice.md").write_text(format_advice(advice) + "\n")
    return advice, out
