"""The training loop, top to bottom: data, the run's parts (:mod:`visionmtl.engine.training_run`),
epochs of steps, validation, checkpoints."""

from __future__ import annotations

import json
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from visionmtl.config import Config
from visionmtl.data import CocoDataset, MixedDataset, build_training_set
from visionmtl.data.records import cache_dir
from visionmtl.engine.checkpoint import load_checkpoint, save_checkpoint
from visionmtl.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    any_rank,
    average_gradients,
    barrier,
    broadcast_buffers_from_main,
    gather_to_main,
    init_distributed,
    shutdown_distributed,
    tensors_in_sync,
)
from visionmtl.engine.loggers import LOG_FILE, RunLogger, check_loggers, copy_prints, epoch_line
from visionmtl.engine.rundir import agree_on_run_dir, prepare_run_dir, run_dir_line
from visionmtl.engine.task_steps import (
    gradient_stats,
    interaction_record,
    labelled_only,
    task_affinity,
)
from visionmtl.engine.training_run import Progress, TrainingRun, fresh_epoch_stats
from visionmtl.errors import ConfigError, DataError, TrainingError
from visionmtl.evaluation.evaluate import combined_metrics
from visionmtl.evaluation.report import MAIN_METRICS, format_metrics_table
from visionmtl.evaluation.validation import build_validation_sets, train_transform
from visionmtl.models import CrossStitchNeck, MultiTaskModel
from visionmtl.models.backbone import fill_backbone_defaults, resolve_backbone_defaults
from visionmtl.models.summary import format_summary, model_summary
from visionmtl.mtl.diagnostics import interaction_summary
from visionmtl.precision import autocast
from visionmtl.structures import ClassSpec, group_by_task, labelled_tasks

__all__ = ["TrainingError", "train"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_datasets(cfg: Config) -> MixedDataset:
    """Training set (main + ``data.extra_sources``, augmented); ``cfg`` has its backbone defaults
    resolved (:func:`resolve_backbone_defaults`)."""
    data = cfg.data
    train_tf = train_transform(cfg)
    policy = {
        "on_invalid": data.on_invalid,
        "max_bad_fraction": data.max_bad_image_fraction,
        "sem_classes": cfg.model.sem.class_names,
        "cache_dir": cache_dir(data.cache),
    }
    if not data.train_ann and not data.extra_sources:
        raise ConfigError("no training data: set data.train_ann or data.extra_sources")
    main = None
    if data.train_ann:
        main = CocoDataset(
            data.train_ann, data.train_images, transform=train_tf, tasks=cfg.model.tasks, **policy
        )
    return build_training_set(main, data.extra_sources, transform=train_tf, **policy)


def dataset_classes(cfg: Config, dataset: CocoDataset | MixedDataset) -> ClassSpec:
    """The model's classes: the training set's categories, ``model.sem.class_names`` and whether
    the semantic head has a background class (some source labels it)."""
    where = cfg.data.train_ann or ", ".join(getattr(dataset, "source_names", []))
    if not dataset.class_names and "det" in cfg.model.tasks:
        raise ConfigError(
            f"model.tasks has 'det' but no training source labels boxes ({where}): add a COCO "
            "source with det in its tasks, or leave det and inst out of model.tasks"
        )
    if isinstance(dataset, MixedDataset):
        background = dataset.sem_background
    else:
        background = dataset.labels_sem_background
    try:
        names, ids = dataset.class_names, dataset.category_ids
        return ClassSpec.from_data(names, ids, cfg.model.sem.class_names, background)
    except ConfigError as error:
        raise DataError(f"{where}: its categories: {error}") from None


def selection_score(metrics: dict[str, Any]) -> float:
    """One number to pick ``best.pt``: mean of the main metric of each task present."""
    values = [metrics[k] for k in MAIN_METRICS if metrics.get(k) is not None]
    return float(sum(values) / len(values)) if values else -1.0


class _StopRequest:
    """Turns SIGTERM (schedulers' pre-emption) into a checkpoint at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _report_data_problems(output_dir: Path, *datasets: CocoDataset | None) -> None:
    """One line per data set on what the checks found; the full list into the run directory."""
    lines = []
    for dataset in datasets:
        if dataset is None or not dataset.problems:
            continue
        print(f"data: {dataset.report.summary()}")
        lines.append(dataset.report.to_text())
    if lines:
        (output_dir / "data_problems.txt").write_text("\n\n".join(lines) + "\n")


def train(
    cfg: Config,
    output_dir: str | Path | None = None,
    resume: bool = False,
    stop_after_steps: int | None = None,
    exist_ok: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` and write ``config.yaml``, ``env.json``, ``last.pt``, ``best.pt``,
    ``eval.json``, the metric files of ``train.loggers`` and ``train.log`` into the run directory
    (rank 0 only under torchrun).

    The run directory is ``output_dir`` (default ``train.output_dir``) unless that holds an earlier
    run: then the next free name (``runs/exp2``, ...), printed first; ``exist_ok`` reuses
    ``output_dir`` (a fresh run replaces what is there). ``resume`` continues the run in
    ``output_dir`` from ``last.pt`` at the exact step it was saved at (mid-epoch too).
    ``stop_after_steps`` saves ``last.pt`` and returns after that many steps in total (used to
    test resumption; SIGTERM does the same). Returns the final evaluation metrics."""
    device = resolve_device(cfg.train.device)
    if cfg.train.sync_bn and device.type != "cuda":
        # One rule for one process and torchrun: DDP refuses SyncBatchNorm off CUDA.
        raise ConfigError(
            f"train.sync_bn: SyncBatchNorm needs CUDA, but this run trains on {device} "
            f"(train.device: {cfg.train.device}); set train.sync_bn: false, or train on GPUs"
        )
    check_loggers(cfg.train.loggers)
    dist_info = init_distributed(device)
    try:
        requested = Path(output_dir or cfg.train.output_dir)
        output_dir = agree_on_run_dir(requested, exist_ok, resume, dist_info)
        log = copy_prints(output_dir / LOG_FILE, resume) if dist_info.is_main else nullcontext()
        with _StopRequest() as stop, log:
            if dist_info.is_main:
                print(run_dir_line(requested, output_dir))
            cfg, device = _start(cfg, output_dir, resume, device, dist_info)
            return _train(cfg, output_dir, resume, stop_after_steps, device, dist_info, stop)
    finally:
        shutdown_distributed()


def _start(
    cfg: Config, output_dir: Path, resume: bool, device: torch.device, dist_info: DistInfo
) -> tuple[Config, torch.device]:
    """The run's config with its defaults resolved, this rank's device; threads and seeds set."""
    cfg = _resolve_run_defaults(cfg, output_dir, resume)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    return cfg, device


def _resolve_run_defaults(cfg: Config, output_dir: Path, resume: bool) -> Config:
    """``cfg`` with its backbone-dependent nulls (input statistics, frozen BatchNorm and stages)
    resolved once for the run: as the run being resumed has them (its ``last.pt``), else from the
    backbone and whether weights are loaded; fine-tuning (``model.init_from``) keeps the input
    statistics of the checkpoint it starts from."""
    last = output_dir / "last.pt"
    if resume and last.is_file():
        cfg = fill_backbone_defaults(cfg, load_checkpoint(last)[0])
    elif cfg.model.init_from and (cfg.data.mean is None or cfg.data.std is None):
        # Fine-tuning: the input statistics the weights were trained with, not the backbone's.
        source = load_checkpoint(cfg.model.init_from)[0].data
        data = replace(cfg.data, mean=cfg.data.mean or source.mean, std=cfg.data.std or source.std)
        cfg = replace(cfg, data=data)
    return resolve_backbone_defaults(cfg)


def _build_data(cfg: Config, dist_info: DistInfo) -> tuple[MixedDataset, ClassSpec, Any]:
    """Training set, its classes and the validation sets. With ``data.cache`` under torchrun,
    rank 0 reads, checks and caches the annotation files first and the other ranks then read its
    cache; rank 0 reaches the barrier even when it fails (the others then fail on the same files
    rather than wait for the process group's timeout)."""

    def build() -> tuple[MixedDataset, ClassSpec, Any]:
        train_set = build_datasets(cfg)
        classes = dataset_classes(cfg, train_set)
        return train_set, classes, build_validation_sets(cfg, classes)

    if not (dist_info.enabled and cfg.data.cache):
        return build()
    if dist_info.is_main:
        try:
            return build()
        finally:
            barrier(dist_info)
    barrier(dist_info)
    return build()


def _train(
    cfg: Config,
    output_dir: Path,
    resume: bool,
    stop_after_steps: int | None,
    device: torch.device,
    dist_info: DistInfo,
    stop: _StopRequest,
) -> dict[str, Any]:
    train_set, classes, val_sets = _build_data(cfg, dist_info)
    if dist_info.is_main:
        prepare_run_dir(output_dir, cfg)
        _report_data_problems(output_dir, *train_set.coco_sets, val_sets.coco)
    run = TrainingRun(cfg, classes, train_set, val_sets, output_dir, resume, device, dist_info)
    progress = run.restore(resume)
    if run.is_main:
        _print_start(run, len(train_set))
        # --resume never deletes what is there, even without a last.pt to resume from
        run.logger = RunLogger(output_dir, cfg.train.loggers, progress.step, fresh=not resume)
    try:
        return _run_epochs(run, progress, stop, stop_after_steps)
    finally:
        if run.logger is not None:
            run.logger.close()


def _run_epochs(
    run: TrainingRun, progress: Progress, stop: _StopRequest, stop_after_steps: int | None
) -> dict[str, Any]:
    """Epochs from ``progress`` to ``train.epochs``, then the final checks and files; the final
    metrics, or ``interrupted`` and the step reached."""
    cfg = run.cfg
    metrics: dict[str, Any] = {}
    while progress.epoch < cfg.train.epochs:
        epoch_start = time.perf_counter()
        if not _train_epoch(run, progress, stop, stop_after_steps):
            return {"interrupted": True, "step": progress.step}
        evaluated = _end_epoch(run, progress, time.perf_counter() - epoch_start)
        metrics = metrics if evaluated is None else evaluated
    _finish(run, metrics)
    return metrics


def _print_start(run: TrainingRun, num_images: int) -> None:
    cfg = run.cfg
    print(
        f"model: {cfg.model.backbone.name}, tasks {cfg.model.tasks}, {cfg.mtl.sharing} sharing, "
        f"mtl.method={cfg.mtl.method}; device {run.device} x {run.dist_info.world_size}; "
        f"{num_images} training images, {run.iters_per_epoch} iterations/epoch"
    )
    print(
        f"backbone: {run.model.backbone.describe_freezing()}; "
        f"input mean {cfg.data.mean}, std {cfg.data.std}"
    )
    print(format_summary(model_summary(run.model, cfg.data.image_size)))


def _train_epoch(
    run: TrainingRun, progress: Progress, stop: _StopRequest, stop_after_steps: int | None
) -> bool:
    """The rest of epoch ``progress.epoch`` from batch ``progress.batch``, saving ``last.pt`` every
    ``train.checkpoint_every`` steps. Returns False where a stop was requested (SIGTERM or
    ``stop_after_steps``): then ``last.pt`` holds the step reached."""
    cfg, epoch = run.cfg, progress.epoch
    run.sampler.set_epoch(epoch, progress.batch)
    run.model.train()
    if progress.batch == 0:
        progress.epoch_stats = fresh_epoch_stats()
    interaction: dict[str, str] = {}  # weights, gradient norms, worst cosine (mtl.log_every)
    bar = tqdm(
        run.loader,
        desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
        dynamic_ncols=True,
        mininterval=2.0,
        disable=not run.is_main,
    )
    for batch, (images, targets) in enumerate(bar, start=progress.batch):
        logged = train_step(run, progress, images, targets)
        interaction = interaction if logged is None else logged
        if cfg.train.compile and run.is_main and not run.graph_breaks_shown:
            print(graph_break_report())  # the first step of this run compiled the model
            run.graph_breaks_shown = True
        progress.batch = batch + 1
        if run.is_main and batch % max(cfg.train.log_every, 1) == 0:
            running = host_floats(progress.epoch_stats["running"])  # one host read
            postfix = {k: f"{v:.3f}" for k, v in running.items() if "/" in k}
            bar.set_postfix({**postfix, **interaction})
        every = cfg.train.checkpoint_every
        if every and progress.step % every == 0:
            run.save_last(progress)
        halt = stop.requested or (
            stop_after_steps is not None and progress.step >= stop_after_steps
        )
        if any_rank(halt, run.dist_info, run.device):
            run.save_last(progress)
            if run.is_main:
                print(f"stopped at epoch {epoch + 1}, batch {batch + 1}; resume with --resume")
            return False
    return True


def graph_break_report() -> str:
    """The graph breaks torch.compile met so far (the first forward compiles), by reason."""
    from torch._dynamo.utils import counters

    breaks = counters["graph_break"]
    reasons = "; ".join(f"{count}x {reason[:120]}" for reason, count in breaks.most_common(3))
    return f"train.compile: {sum(breaks.values())} graph break(s)" + (
        f", most common: {reasons}" if reasons else ""
    )


def train_step(
    run: TrainingRun,
    progress: Progress,
    images: torch.Tensor,
    targets: list[dict[str, torch.Tensor]],
) -> dict[str, str] | None:
    """Forward one batch ``[B, 3, H, W]``, then an optimizer step, or the NaN policy where a loss is
    not finite on some rank; one lr step either way. Returns the task-interaction summary at the
    steps where ``mtl.log_every`` logs it."""
    cfg, device = run.cfg, run.device
    images, targets = run.device_input(images, targets)
    buffers = run.nan_guard.snapshot(run.model)
    with autocast(device, cfg.train.amp):
        losses, features = run.train_model(images, targets, return_features=True)
    losses = {name: value.float() for name, value in losses.items()}
    run.optimizer.zero_grad(set_to_none=True)
    interaction = None
    if any_rank(run.nan_guard.any_bad(losses), run.dist_info, device):
        run.nan_guard.handle(
            losses,
            images,
            targets,
            run.model,
            buffers,
            progress.epoch,
            progress.batch,
            run.dist_info.rank,
        )
    else:
        interaction = _optimize(run, progress, losses, features, images, targets)
    run.scheduler.step()
    progress.step += 1
    return interaction


def _optimize(
    run: TrainingRun,
    progress: Progress,
    losses: dict[str, torch.Tensor],
    features: Any,
    images: torch.Tensor,
    targets: list[dict[str, torch.Tensor]],
) -> dict[str, str] | None:
    """Task losses of the labelled tasks through the balancer to gradients (on the shared
    parameters or ``features``), clipping, the optimizer step and the epoch's loss statistics.
    Returns the task-interaction summary where this step logs it (``mtl.log_every``; the
    lookahead affinity at ``mtl.affinity_every``)."""
    cfg = run.cfg
    labelled = labelled_tasks(targets)
    task_losses = labelled_only(group_by_task(losses), labelled)
    shared = features if cfg.mtl.grad_on == "features" else run.shared_params
    log_grads = cfg.mtl.log_every > 0 and progress.step % cfg.mtl.log_every == 0
    grad_stats = gradient_stats(task_losses, shared, run.scaler) if log_grads else {}
    if cfg.mtl.affinity_every > 0 and progress.step % cfg.mtl.affinity_every == 0:
        real = {task: loss for task, loss in task_losses.items() if task in labelled}
        step = cfg.train.lr  # the configured lr, not the scheduled one: warm-up starts at 0
        grad_stats |= task_affinity(
            run.model, images, targets, real, run.shared_params, run.scaler, step, cfg.train.amp
        )
        log_grads = True
    weights = run.balancer.backward(task_losses, shared, run.scaler)
    average_gradients(run.balancer.parameters(), run.dist_info)
    if cfg.train.clip_grad_norm > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.clip_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update(run.model, step=progress.step + 1)
    _accumulate(progress.epoch_stats, losses, task_losses, labelled)
    if not log_grads or run.logger is None:
        return None
    lr = run.optimizer.param_groups[0]["lr"]
    run.logger.log_step(interaction_record(progress.step, lr, task_losses, weights, grad_stats))
    return interaction_summary(weights, grad_stats)


def _accumulate(
    epoch_stats: dict[str, dict],
    losses: dict[str, torch.Tensor],
    task_losses: dict[str, torch.Tensor],
    labelled: set[str],
) -> None:
    """Running averages of every loss term and task loss; sums of the labelled tasks' losses.

    Kept as float64 tensors on the losses' device (the same arithmetic as Python floats): reading
    each loss on the host every step would wait for the GPU once per loss term; they are read
    when logged (``train.log_every``) and at the end of the epoch."""
    running = epoch_stats["running"]
    for name, value in {**task_losses, **losses}.items():
        value = value.detach().double()
        running[name] = 0.9 * running.get(name, value) + 0.1 * value
    for task, value in task_losses.items():
        if task in labelled:
            totals = epoch_stats["task_sums"].setdefault(task, [0.0, 0])
            totals[0], totals[1] = totals[0] + value.detach().double(), totals[1] + 1


def host_floats(values: dict[str, float | torch.Tensor]) -> dict[str, float]:
    """Scalars (0-dim tensors on any device, or floats) as Python floats, in one host read."""
    if not values:
        return {}
    tensors = [v for v in values.values() if isinstance(v, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    stacked = torch.stack(
        [torch.as_tensor(v, dtype=torch.float64, device=device) for v in values.values()]
    )
    return dict(zip(values, stacked.tolist(), strict=True))


def stitch_weights(model: MultiTaskModel) -> dict[str, float]:
    """The learned cross-stitch weights as epoch-record keys: ``stitch/P3/det<-sem`` is how much
    of the sem branch det's P3 maps hold (empty without ``mtl.sharing: cross_stitch``)."""
    neck = model.neck
    if not isinstance(neck, CrossStitchNeck):
        return {}
    return {
        f"stitch/{level}/{task}<-{source}": round(weight, 4)
        for level, matrix in neck.mixing().items()
        for task, row in zip(neck.tasks, matrix, strict=True)
        for source, weight in zip(neck.tasks, row, strict=True)
    }


def _end_epoch(run: TrainingRun, progress: Progress, seconds: float) -> dict[str, Any] | None:
    """The balancer's epoch hook, validation when due (``best.pt`` on a better score), the epoch's
    record to the loggers and a printed line, ``last.pt`` at the next epoch. Returns the
    validation metrics, None
    where there was no validation on this rank."""
    cfg, epoch = run.cfg, progress.epoch
    task_sums = progress.epoch_stats["task_sums"]
    means = host_floats({task: total / max(count, 1) for task, (total, count) in task_sums.items()})
    run.balancer.end_epoch(all_reduce_mean(means, run.dist_info, run.device))
    running = host_floats(progress.epoch_stats["running"])
    running = all_reduce_mean(running, run.dist_info, run.device)
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": progress.step,
        "lr": run.optimizer.param_groups[0]["lr"],
        "epoch_seconds": round(seconds, 2),
        **{f"loss/{k}": round(v, 5) for k, v in running.items()},
        **stitch_weights(run.model),
    }
    metrics = None
    if run.val_sets and ((epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs):
        metrics = _validate(run, progress)
        barrier(run.dist_info)
    if run.logger is not None:
        flat = {k: v for k, v in (metrics or {}).items() if k != "per_class"}
        run.logger.log_epoch(record, flat)
        print(epoch_line(record, flat, cfg.train.epochs))
    progress.epoch, progress.batch = epoch + 1, 0
    run.save_last(progress)
    return metrics


def _validate(run: TrainingRun, progress: Progress) -> dict[str, Any] | None:
    """Validation metrics of the current weights (their EMA with ``train.ema``): every rank
    infers its share of the images, rank 0 gathers and scores them all and saves ``best.pt``
    when they beat the best score. None on the other ranks."""
    info = run.dist_info
    broadcast_buffers_from_main(run.eval_model, info)  # every shard scores one and the same model
    shard = (info.rank, info.world_size)
    evaluations = run.val_sets.run(run.eval_model, run.cfg, run.device, shard=shard)
    shards = gather_to_main([evaluation.shard_state() for evaluation in evaluations], info)
    if shards is None:
        return None
    for index, evaluation in enumerate(evaluations):
        for other in shards[1:]:
            evaluation.add_shard(other[index])
    metrics = combined_metrics(evaluations)
    score = selection_score(metrics)
    if score > progress.best_score:
        progress.best_score = score
        save_checkpoint(
            run.output_dir / "best.pt",
            run.cfg,
            run.eval_model,
            epoch=progress.epoch + 1,
            metrics=json.dumps(metrics),
        )
    return metrics


def _finish(run: TrainingRun, metrics: dict[str, Any]) -> None:
    """Check that all ranks hold the same weights; ``best.pt`` when there is no validation set,
    ``eval.json`` and the metrics table when there are metrics."""
    if run.dist_info.enabled:
        balancer_state = [
            v for v in run.balancer.state_dict().values() if isinstance(v, torch.Tensor)
        ]
        parameters = list(run.model.parameters()) + balancer_state
        if not tensors_in_sync(parameters, run.dist_info, run.device):
            raise TrainingError("ranks ended with different weights")
        if run.is_main:
            print(f"all {run.dist_info.world_size} ranks hold identical weights")
    if run.is_main:
        if isinstance(run.model.neck, CrossStitchNeck):  # how much each task drew on the others
            print("\n".join(run.model.neck.describe_mixing()))
        if not run.val_sets:
            save_checkpoint(
                run.output_dir / "best.pt", run.cfg, run.eval_model, epoch=run.cfg.train.epochs
            )
        if metrics:
            (run.output_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
            print(format_metrics_table(metrics))
