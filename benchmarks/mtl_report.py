"""Seeing the tasks interact: single-task baselines vs multi-task models trained with the same config.

python benchmarks/mtl_report.py --config configs/pennfudan.yaml [--set KEY=VALUE ...]
    [--methods fixed uncertainty dwa gradnorm pcgrad cagrad] [--sharing hard adapters]
    [--models METHOD/SHARING ...] [--reuse] [--epochs N] [--threads T] [--out runs/mtl_report]

Each task of ``model.tasks`` gets a single-task baseline: ``[det]``, ``[sem]``, and ``[det, inst]`` for
the instance task (instance masks are predicted inside detected boxes, so the mask head cannot train
without the detector). Every ``mtl.method`` x ``mtl.sharing`` pair asked for (or each ``--models``
entry, e.g. ``fixed/hard pcgrad/hard fixed/adapters``) gives one multi-task model. The report,
``mtl_report.json`` and ``mtl_report.md`` in ``--out``, holds each task metric, the relative change
against its baseline and the multi-task performance delta (Maninis et al. 2019, Vandenhende et al.
2021)::

    delta_m = 1/T * sum_i (-1)^{l_i} (M_mt,i - M_st,i) / M_st,i     (l_i = 1 if lower is better)

plus parameters, inference ms/image (Predictor, batch 1, median over the validation images) and
training seconds of one multi-task model against the single-task models together. The report files
are rewritten after every model; ``--reuse`` skips models already trained into ``--out`` with the
identical config, so a stopped report can be resumed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` as a script, too

from benchmarks.cli import run_overrides
from benchmarks.latency import checkpoint_latency_ms
from benchmarks.mtl_report_format import format_report
from visionmtl.cli import run_tool
from visionmtl.config import (
    MTL_METHODS,
    MTL_SHARING,
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    load_config,
)
from visionmtl.engine.checkpoint import load_model
from visionmtl.engine.trainer import resolve_device, train
from visionmtl.errors import TrainingError

# The single-task baseline of each task (tasks, in config order).
BASELINE_TASKS: dict[str, tuple[str, ...]] = {
    "det": ("det",),
    "sem": ("sem",),
    "inst": ("det", "inst"),
}
# Metrics shown per task; the first of each enters delta_m. All are higher-is-better.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "det": ("bbox_AP", "bbox_AP50"),
    "inst": ("segm_AP", "segm_AP50"),
    "sem": ("mIoU",),
}

NOTES: tuple[str, ...] = (
    "Baselines: one model per task with the same config (backbone, data, schedule, seed); the "
    "instance task's baseline is [det, inst] because masks are predicted inside detected boxes.",
    "delta_m: mean over the tasks' main metrics (bbox_AP, segm_AP, mIoU; all higher-is-better) of "
    "the relative change (M_mt - M_st) / M_st; a metric whose baseline is 0 has no relative change "
    "and is left out of the mean (shown as n/a).",
    "params / infer ms: 'single-task models together' is the sum over the baselines (each runs "
    "its own backbone). infer ms/img: median over the validation images at batch 1 through "
    "Predictor (decoded RGB array to predictions at the original size).",
    "train s: sum of the epochs' training-loop time (data loading included, evaluation and "
    "checkpoint writing excluded); wall s is the whole train() call.",
)


# ---------------------------------------------------------------- delta_m


def relative_changes(
    mt: Mapping[str, float],
    st: Mapping[str, float],
    lower_is_better: Sequence[str] | set[str] | frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Per metric of ``st``: ``(-1)^{l} (mt - st) / st`` (positive = multi-task is better).

    NaN where the baseline is 0 or either value is missing / not finite. Raises ValueError when a
    baseline metric is absent from ``mt``."""
    missing = [key for key in st if key not in mt]
    if missing:
        raise ValueError(f"multi-task metrics lack {missing} (have {sorted(mt)})")
    changes: dict[str, float] = {}
    for key, base in st.items():
        value = mt[key]
        usable = value is not None and base is not None and math.isfinite(value)
        if not usable or not math.isfinite(base) or base == 0:
            changes[key] = math.nan
            continue
        sign = -1.0 if key in lower_is_better else 1.0
        changes[key] = sign * (float(value) - float(base)) / abs(float(base))
    return changes


def delta_m(
    mt: Mapping[str, float],
    st: Mapping[str, float],
    lower_is_better: Sequence[str] | set[str] | frozenset[str] = frozenset(),
) -> float:
    """Multi-task performance delta: mean of :func:`relative_changes` over the metrics of ``st``
    that have one (NaN if none has). E.g. mt {a: .55, b: .40} vs st {a: .5, b: .5} -> -0.05."""
    defined = [c for c in relative_changes(mt, st, lower_is_better).values() if math.isfinite(c)]
    return sum(defined) / len(defined) if defined else math.nan


def hurt_sentence(name: str, changes: Mapping[str, float]) -> str:
    """One plain sentence naming each metric that multi-task training made worse."""
    hurt = [f"{key} ({change:+.1%})" for key, change in changes.items() if change < 0]
    if not hurt:
        return f"{name}: multi-task training hurt no task metric."
    listed = hurt[0] if len(hurt) == 1 else ", ".join(hurt[:-1]) + " and " + hurt[-1]
    return f"{name}: multi-task training hurt {listed}."


# ---------------------------------------------------------------- configs


def baseline_name(tasks: Sequence[str]) -> str:
    return "+".join(tasks)


def parse_models(models: Sequence[str]) -> list[tuple[str, str]]:
    """``["pcgrad/hard", "fixed/adapters"]`` -> ``[("pcgrad", "hard"), ("fixed", "adapters")]``."""
    pairs = []
    for item in models:
        method, sep, mode = item.partition("/")
        if not sep or not method or not mode or "/" in mode:
            raise ConfigError(
                f"--models: expected METHOD/SHARING such as pcgrad/hard, got {item!r}"
            )
        pairs.append((method, mode))
    return pairs


def parse_baselines(names: Sequence[str]) -> list[tuple[str, ...]]:
    """``["det+inst", "sem"]`` -> ``[("det", "inst"), ("sem",)]``."""
    return [tuple(name.split("+")) for name in names]


def single_task_config(cfg: Config, tasks: Sequence[str]) -> Config:
    """``cfg`` for a model of ``tasks`` alone: fixed weights, hard sharing, and only the data of
    those tasks (training sources that label none of them are left out, the others keep only
    these tasks; the PNG validation set only with sem, the COCO one only when it scores a task
    the PNG set does not)."""
    tasks = list(tasks)
    weights = {t: w for t, w in cfg.mtl.weights.items() if t in tasks}
    mtl = replace(cfg.mtl, method="fixed", sharing="hard", weights=weights)
    sources = [
        replace(source, tasks=[t for t in source.tasks if t in tasks])
        for source in cfg.data.extra_sources
        if set(source.tasks) & set(tasks)
    ]
    data = replace(cfg.data, extra_sources=sources)
    if "sem" not in tasks:
        no_png = {"val_sem_images": "", "val_sem_masks": "", "val_sem_class_names": []}
        data = replace(data, **no_png, val_sem_ids=None, val_sem_ignore_ids=[])
    elif data.val_sem_masks and tasks == ["sem"]:
        data = replace(data, val_ann="", val_images="")
    return replace(cfg, model=replace(cfg.model, tasks=tasks), mtl=mtl, data=data)


def report_configs(
    cfg: Config,
    methods: Sequence[str],
    sharing: Sequence[str],
    models: Sequence[str] | None = None,
    baselines: Sequence[Sequence[str]] | None = None,
) -> tuple[dict[str, Config], dict[str, Config]]:
    """(single-task configs by baseline name, multi-task configs by ``method/sharing``).

    The baselines are ``baselines`` (task tuples) or one per task (``BASELINE_TASKS``); each is
    :func:`single_task_config`. The multi-task models are every method x sharing pair, or exactly
    ``models`` (``method/sharing`` strings) when given. All are validated here, before any
    training, so a rejected method, sharing or baseline fails at once."""
    tasks = list(cfg.model.tasks)
    if len(tasks) < 2:
        raise ConfigError(f"model.tasks: a multi-task report needs at least two tasks, got {tasks}")
    if not cfg.data.val_ann and not cfg.data.val_sem_masks:
        raise ConfigError(
            "data.val_ann: the report compares validation metrics; set a validation set"
        )
    pairs = parse_models(models) if models else [(m, s) for s in sharing for m in methods]
    if not pairs:
        raise ConfigError("a multi-task report needs at least one method and one sharing mode")
    chosen = [tuple(b) for b in baselines] if baselines else [BASELINE_TASKS[t] for t in tasks]
    uncovered = [t for t in tasks if not any(t in b for b in chosen)]
    if uncovered or any(not set(b) <= set(tasks) for b in chosen):
        raise ConfigError(
            f"--baselines: every task of {tasks} needs a baseline, and a baseline only these "
            f"tasks (got {['+'.join(b) for b in chosen]})"
        )
    single = {baseline_name(b): single_task_config(cfg, b) for b in chosen}
    multi: dict[str, Config] = {}
    for method, mode in pairs:
        overrides = [f"mtl.method={method}", f"mtl.sharing={mode}"]
        if method != "fixed":  # only 'fixed' reads mtl.weights (others warn)
            overrides.append("mtl.weights={}")
        multi[f"{method}/{mode}"] = apply_overrides(cfg, overrides)
    return single, multi


# ---------------------------------------------------------------- one training


def _epoch_seconds(metrics_file: Path, skip_lines: int) -> float:
    """Sum of ``epoch_seconds`` over the records this run appended to ``metrics.jsonl``."""
    if not metrics_file.is_file():
        return math.nan
    lines = metrics_file.read_text().splitlines()[skip_lines:]
    records = [json.loads(line) for line in lines if line.strip()]
    return float(sum(r.get("epoch_seconds", 0.0) for r in records if "epoch" in r))


ROW_FILE = "report_row.json"


class ReportStopped(TrainingError):
    """A training inside the report was stopped (SIGTERM): the report stops, not just that model."""


def _cached_row(cfg: Config, out_dir: Path) -> dict[str, Any] | None:
    """The row a previous report saved in ``out_dir`` for exactly this config, else None."""
    path = out_dir / ROW_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    # Compared as JSON: a saved id map's int keys ({0: sky}) come back as strings.
    if saved.get("config") != json.loads(json.dumps(_jsonable(config_to_dict(cfg)))):
        return None
    return saved.get("row")


def train_one(
    cfg: Config,
    out_dir: Path,
    device: torch.device,
    reuse: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir``; its final metrics, parameter count and timings.

    The row is also saved as ``out_dir/report_row.json`` with the config; with ``reuse`` a saved
    row for the identical config is returned without training (an interrupted report resumes)."""
    if reuse and (row := _cached_row(cfg, out_dir)) is not None:
        print(f"   reusing {out_dir / ROW_FILE}")
        return row
    (out_dir / ROW_FILE).unlink(missing_ok=True)  # never leave a row of an earlier config
    metrics_file = out_dir / "metrics.jsonl"
    previous = len(metrics_file.read_text().splitlines()) if metrics_file.is_file() else 0
    start = time.perf_counter()
    metrics = train(cfg, out_dir, exist_ok=True)  # the report reads out_dir/best.pt
    wall = time.perf_counter() - start
    if metrics.get("interrupted"):
        raise ReportStopped(
            f"training into {out_dir} was stopped at step {metrics.get('step')}; the report "
            "files hold the models finished so far; rerun with --reuse to go on"
        )
    checkpoint = out_dir / "best.pt"
    model, _ = load_model(checkpoint, device=device)
    params = sum(p.numel() for p in model.parameters())
    del model
    row = {
        "tasks": list(cfg.model.tasks),
        "method": cfg.mtl.method,
        "sharing": cfg.mtl.sharing,
        "metrics": {k: v for k, v in metrics.items() if k != "per_class"},
        "per_class_iou": {
            name: values["IoU"]
            for name, values in metrics.get("per_class", {}).items()
            if values.get("IoU") is not None
        },
        "params": params,
        "infer_ms": checkpoint_latency_ms(checkpoint, device),
        "train_s": _epoch_seconds(metrics_file, previous),
        "wall_s": wall,
        "output_dir": str(out_dir),
    }
    saved = {"config": config_to_dict(cfg), "row": row}
    (out_dir / ROW_FILE).write_text(json.dumps(_jsonable(saved), indent=2) + "\n")
    return row


# ---------------------------------------------------------------- the report


def _reference_metrics(cfg: Config, single: Mapping[str, dict[str, Any]]) -> dict[str, float]:
    """Each task's metrics from its own baseline (bbox_AP from [det], not from [det, inst]), else
    from the first baseline that has the task (e.g. bbox_AP from [det, inst])."""
    reference: dict[str, float] = {}
    for task in cfg.model.tasks:
        own = baseline_name(BASELINE_TASKS[task])
        name = own if own in single else next(n for n in single if task in n.split("+"))
        metrics = single[name]["metrics"]
        reference.update({key: metrics.get(key) for key in TASK_METRICS[task]})
    return reference


def train_seeds(
    cfg: Config, run_dir: Path, device: torch.device, reuse: bool, seeds: Sequence[int]
) -> dict[str, Any]:
    """:func:`train_one` once per seed (``train.seed``; the first into ``run_dir``, the others
    into ``run_dir_seed<k>``); with several seeds the row holds their mean (``metrics``,
    ``per_class_iou``, times), the standard deviation of each metric (``std``) and every seed's
    metrics (``seed_metrics``)."""
    rows = []
    for index, seed in enumerate(seeds):
        seeded = replace(cfg, train=replace(cfg.train, seed=seed))
        directory = run_dir if index == 0 else run_dir.with_name(f"{run_dir.name}_seed{seed}")
        rows.append(train_one(seeded, directory, device, reuse))
    if len(rows) == 1:
        return rows[0]
    row = dict(rows[0])
    for key in ("metrics", "per_class_iou"):
        row[key] = {name: _mean([r[key].get(name) for r in rows]) for name in rows[0][key]}
    row["std"] = {name: _std([r["metrics"].get(name) for r in rows]) for name in row["metrics"]}
    row["seed_metrics"] = {str(seed): r["metrics"] for seed, r in zip(seeds, rows, strict=True)}
    for key in ("infer_ms", "train_s", "wall_s"):
        row[key] = _mean([r[key] for r in rows])
    return row


def _numbers(values: Sequence[Any]) -> list[float] | None:
    """The values as floats, or None when any is missing or not a finite number."""
    usable = all(isinstance(v, int | float) and math.isfinite(v) for v in values)
    return [float(v) for v in values] if usable and values else None


def _mean(values: Sequence[Any]) -> Any:
    numbers = _numbers(values)
    return values[0] if numbers is None else sum(numbers) / len(numbers)


def _std(values: Sequence[Any]) -> float | None:
    """Sample standard deviation (n - 1) of the seeds' values."""
    numbers = _numbers(values)
    if numbers is None or len(numbers) < 2:
        return None
    mean = sum(numbers) / len(numbers)
    return math.sqrt(sum((v - mean) ** 2 for v in numbers) / (len(numbers) - 1))


def _together(single: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    rows = list(single.values())

    def total(key: str) -> float | None:
        values = [row[key] for row in rows]
        return None if any(v is None for v in values) else sum(values)

    return {key: total(key) for key in ("params", "infer_ms", "train_s", "wall_s")}


def _sharing_notes(multi: Mapping[str, dict[str, Any]]) -> list[str]:
    """Warn when a non-hard sharing mode built exactly the hard-sharing model."""
    notes = []
    for name, row in multi.items():
        hard = multi.get(f"{row['method']}/hard")
        if row["sharing"] != "hard" and hard is not None and hard["params"] == row["params"]:
            notes.append(
                f"{name}: mtl.sharing={row['sharing']} built a model with exactly the parameters "
                "of hard sharing; the model builder may not implement it yet."
            )
    return notes


def _settings(cfg: Config, models: Sequence[str], device: torch.device) -> dict[str, Any]:
    return {
        "tasks": list(cfg.model.tasks),
        "models": list(models),
        "epochs": cfg.train.epochs,
        "image_size": cfg.data.image_size,
        "batch_size": cfg.data.batch_size,
        "backbone": cfg.model.backbone.name,
        "train_ann": cfg.data.train_ann,
        "sources": [source.ann or source.sem_masks for source in cfg.data.extra_sources],
        "val_ann": cfg.data.val_ann,
        "val_sem_masks": cfg.data.val_sem_masks,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def run_report(
    cfg: Config,
    methods: Sequence[str],
    sharing: Sequence[str] = ("hard",),
    out_dir: str | Path = "runs/mtl_report",
    threads: int = 0,
    models: Sequence[str] | None = None,
    reuse: bool = False,
    baselines: Sequence[Sequence[str]] | None = None,
    seeds: int = 1,
    seeds_model: str | None = None,
) -> dict[str, Any]:
    """Train the single-task baselines (``baselines``, default one per task) and one multi-task
    model per method x sharing (or per ``models`` entry, ``method/sharing``), then write
    ``mtl_report.json`` and ``mtl_report.md`` into ``out_dir``; returns the report dict.

    With ``seeds`` > 1 every baseline is trained with that many seeds (``train.seed``, + 1, ...)
    and compared by its mean, and so is the multi-task model with the best delta_m once all are
    trained, or ``seeds_model`` (``method/sharing``) when given (its spread against the
    baselines' shows what is noise). The report files are
    rewritten after every multi-task model, so a long report that is stopped keeps what it
    finished (``"complete": false``); ``reuse`` skips every model whose ``report_row.json`` was
    saved for the identical config. A multi-task training that fails (e.g. a sharing mode the
    model cannot build) is recorded under ``failures`` and the others go on; a failing baseline
    stops the report."""
    out_dir = Path(out_dir)
    if threads > 0:
        torch.set_num_threads(threads)
        cfg = replace(cfg, train=replace(cfg.train, threads=threads))
    # Evaluate once, after the last epoch: best.pt is then the final model.
    cfg = replace(cfg, train=replace(cfg.train, eval_every=cfg.train.epochs))
    single_cfgs, multi_cfgs = report_configs(cfg, methods, sharing, models, baselines)
    device = resolve_device(cfg.train.device)
    if seeds < 1:
        raise ConfigError(f"--seeds: at least 1, got {seeds}")
    if seeds_model is not None and seeds_model not in multi_cfgs:
        raise ConfigError(f"--seeds-model: {seeds_model!r} is not one of {list(multi_cfgs)}")
    seed_list = [cfg.train.seed + k for k in range(seeds)]
    single: dict[str, dict[str, Any]] = {}
    for name, st_cfg in single_cfgs.items():
        print(f"== single-task {name}")
        run_dir = out_dir / f"st_{name.replace('+', '_')}"
        single[name] = train_seeds(st_cfg, run_dir, device, reuse, seed_list)
    report = _new_report(cfg, list(multi_cfgs), single, device, seeds)
    multi, failures = report["multi_task"], report["failures"]
    for name, mt_cfg in multi_cfgs.items():
        print(f"== multi-task {name}")
        try:
            row = train_one(mt_cfg, _mt_dir(out_dir, name), device, reuse)
        except ReportStopped:
            raise
        except Exception as error:  # noqa: BLE001 - one broken method must not lose the others
            failures[name] = f"{type(error).__name__}: {error}"
            print(f"== multi-task {name} failed: {failures[name]}")
        else:
            multi[name] = _scored(name, row, report)
        report["notes"] = [*NOTES, *_sharing_notes(multi)]
        write_report(report, out_dir)
    best = max(multi, key=lambda n: _finite(multi[n]["delta_m"]), default=None)
    best = seeds_model if seeds_model in multi else best
    if seeds > 1 and best is not None:
        print(
            f"== multi-task {best} ({'chosen' if seeds_model else 'best delta_m'}): seeds {seed_list}"
        )
        row = train_seeds(multi_cfgs[best], _mt_dir(out_dir, best), device, True, seed_list)
        multi[best] = _scored(best, row, report)
    report["complete"] = True
    write_report(report, out_dir)
    return report


def _mt_dir(out_dir: Path, name: str) -> Path:
    return out_dir / f"mt_{name.replace('/', '_')}"


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else -math.inf


def _new_report(
    cfg: Config,
    models: list[str],
    single: dict[str, dict[str, Any]],
    device: torch.device,
    seeds: int,
) -> dict[str, Any]:
    """The report before any multi-task model: settings, baselines and the reference metrics."""
    return {
        "settings": {**_settings(cfg, models, device), "seeds": seeds},
        "complete": False,
        "delta_m_metrics": [TASK_METRICS[task][0] for task in cfg.model.tasks],
        "reference": _reference_metrics(cfg, single),
        "single_task": single,
        "single_task_together": _together(single),
        "multi_task": {},
        "failures": {},
        "notes": list(NOTES),
    }


def _scored(name: str, row: dict[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with its relative changes, delta_m and hurt sentence against the baselines."""
    reference, main_metrics = report["reference"], report["delta_m_metrics"]
    changes = relative_changes(row["metrics"], reference)
    row["relative_change"] = changes
    row["delta_m"] = delta_m(row["metrics"], {k: reference[k] for k in main_metrics})
    row["delta_m_over"] = [k for k in main_metrics if math.isfinite(changes[k])]
    row["hurt"] = hurt_sentence(name, changes)
    return row


def _jsonable(value: Any) -> Any:
    """NaN / inf -> None, recursively (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "mtl_report.json").write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    (out_dir / "mtl_report.md").write_text(format_report(report) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/pennfudan.yaml")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument(
        "--methods", nargs="+", default=list(MTL_METHODS), help="mtl.method values (default: all)"
    )
    parser.add_argument(
        "--sharing",
        nargs="+",
        default=["hard"],
        help=f"mtl.sharing values (default: hard; known: {' '.join(MTL_SHARING)})",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="METHOD/SHARING",
        help="exact multi-task models to train instead of every --methods x --sharing pair",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse models already trained into --out with the identical config (the data "
        "files themselves are not compared)",
    )
    parser.add_argument(
        "--baselines",
        nargs="+",
        metavar="TASK+TASK",
        help="single-task baselines, e.g. det+inst sem (default: one per task: det, sem, det+inst)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="seeds for every baseline and for the multi-task model with the best delta_m",
    )
    parser.add_argument(
        "--seeds-model",
        metavar="METHOD/SHARING",
        help="the multi-task model trained with every seed (default: the best delta_m)",
    )
    parser.add_argument("--epochs", type=int, help="epochs for every model (train.epochs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", default="runs/mtl_report", help="output directory")
    args = parser.parse_args(argv)

    def run() -> None:
        cfg = load_config(args.config, run_overrides(args.set, args.epochs))
        out = Path(args.out)
        report = run_report(
            cfg,
            args.methods,
            args.sharing,
            out,
            args.threads,
            models=args.models,
            reuse=args.reuse,
            baselines=parse_baselines(args.baselines) if args.baselines else None,
            seeds=args.seeds,
            seeds_model=args.seeds_model,
        )
        print(format_report(report))
        print(f"wrote {out / 'mtl_report.json'} and {out / 'mtl_report.md'}")
        if report["failures"]:
            failed = "; ".join(f"{name}: {error}" for name, error in report["failures"].items())
            raise TrainingError(f"{len(report['failures'])} multi-task model(s) failed: {failed}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
