"""The training loop, top to bottom: data, model, optimisation, evaluation, checkpoints."""

from __future__ import annotations

import json
import math
import random
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from visionmtl.config import Config
from visionmtl.data import CocoDataset, Collator, MixedDataset, build_training_set, build_transforms
from visionmtl.data.batching import move_targets
from visionmtl.data.classes import check_sem_class_count, sem_class_names
from visionmtl.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from visionmtl.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    any_rank,
    average_gradients,
    barrier,
    init_distributed,
    shutdown_distributed,
    tensors_in_sync,
)
from visionmtl.engine.errors import TrainingError
from visionmtl.engine.finetune import init_from_checkpoint
from visionmtl.engine.nan_guard import NanGuard
from visionmtl.engine.optim import build_optimizer, build_scheduler
from visionmtl.engine.precision import autocast, make_scaler
from visionmtl.engine.rundir import prepare_run_dir
from visionmtl.engine.sampler import EpochSampler, SeededDataset
from visionmtl.engine.task_steps import (
    gradient_stats,
    labelled_only,
    labelled_tasks,
    log_interaction,
)
from visionmtl.evaluation.report import format_metrics_table
from visionmtl.evaluation.validation import build_validation_sets
from visionmtl.models import build_model
from visionmtl.models.summary import format_summary, model_summary
from visionmtl.mtl import build_balancer, group_by_task
from visionmtl.mtl.diagnostics import interaction_summary

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
    """Training set (main + ``data.extra_sources``, augmented)."""
    data = cfg.data
    train_tf = build_transforms(
        data.image_size,
        train=True,
        scale_range=tuple(data.scale_range),
        hflip_prob=data.hflip_prob,
        color_jitter=data.color_jitter,
    )
    policy = {
        "on_invalid": data.on_invalid,
        "max_bad_fraction": data.max_bad_image_fraction,
        "sem_classes": cfg.model.sem.class_names,
    }
    main = CocoDataset(data.train_ann, data.train_images, transform=train_tf, **policy)
    return build_training_set(main, data.extra_sources, transform=train_tf, **policy)


def with_dataset_classes(cfg: Config, dataset: CocoDataset | MixedDataset) -> Config:
    """Fill ``model.num_classes``, ``class_names`` and ``category_ids`` from the training set."""
    model = replace(
        cfg.model,
        num_classes=len(dataset.category_ids),
        class_names=list(dataset.class_names),
        category_ids=list(dataset.category_ids),
    )
    if "sem" in model.tasks:
        check_sem_class_count(sem_class_names(model))
    return replace(cfg, model=model)


def selection_score(metrics: dict[str, Any]) -> float:
    """One number to pick ``best.pt``: mean of the main metric of each task present."""
    values = [metrics[k] for k in ("bbox_AP", "segm_AP", "mIoU") if metrics.get(k) is not None]
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
) -> dict[str, Any]:
    """Train ``cfg`` and write ``config.yaml``, ``env.json``, ``last.pt``, ``best.pt``,
    ``metrics.jsonl`` and ``eval.json`` into the output directory (rank 0 only under torchrun).

    ``resume`` continues from ``last.pt`` at the exact step it was saved at (mid-epoch too).
    ``stop_after_steps`` saves ``last.pt`` and returns after that many steps in total (used to
    test resumption; SIGTERM does the same). Returns the final evaluation metrics."""
    output_dir = Path(output_dir or cfg.train.output_dir)
    device = resolve_device(cfg.train.device)
    dist_info = init_distributed(device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    try:
        with _StopRequest() as stop:
            return _train(cfg, output_dir, resume, stop_after_steps, device, dist_info, stop)
    finally:
        shutdown_distributed()


def _train(
    cfg: Config,
    output_dir: Path,
    resume: bool,
    stop_after_steps: int | None,
    device: torch.device,
    dist_info: DistInfo,
    stop: _StopRequest,
) -> dict[str, Any]:
    is_main = dist_info.is_main
    train_set = build_datasets(cfg)
    cfg = with_dataset_classes(cfg, train_set)
    val_sets = build_validation_sets(cfg)
    if is_main:
        prepare_run_dir(output_dir, cfg)
        _report_data_problems(output_dir, *train_set.coco_sets, val_sets.coco)
    model_cfg = cfg.model
    if model_cfg.init_from:  # the checkpoint holds the backbone: fetch no other weights
        no_weights = replace(model_cfg.backbone, pretrained=False, weights=None)
        model_cfg = replace(model_cfg, backbone=no_weights)
    model = build_model(model_cfg, cfg.eval, sharing=cfg.mtl.sharing)
    if cfg.model.init_from and not (resume and (output_dir / "last.pt").is_file()):
        report = init_from_checkpoint(model, cfg, cfg.model.init_from)
        if is_main:
            print(report.summary(cfg.model.init_from))
    model = model.to(device)
    if dist_info.enabled and cfg.train.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_model = DistributedDataParallel(model) if dist_info.enabled else model

    batch_size = cfg.data.batch_size
    sampler = EpochSampler(
        len(train_set),
        batch_size,
        seed=cfg.train.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        drop_last=len(train_set) > batch_size * dist_info.world_size,
    )
    loader = DataLoader(
        SeededDataset(train_set),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=Collator(32),
        persistent_workers=cfg.data.num_workers > 0,
    )
    iters_per_epoch = sampler.batches_per_epoch()
    if iters_per_epoch == 0:
        raise TrainingError(f"{cfg.data.train_ann}: the training set has no images")
    optimizer = build_optimizer(model, cfg.train)
    scaler = make_scaler(device, cfg.train.amp)
    balancer = build_balancer(cfg.mtl, cfg.model.tasks, device=device)
    if balancer.parameters():  # learned task weights (uncertainty) train with the network
        optimizer.add_param_group({"params": balancer.parameters(), "weight_decay": 0.0})
    on_features = cfg.mtl.grad_on == "features"
    shared_params = [
        p for m in (model.backbone, model.neck) for p in m.parameters() if p.requires_grad
    ]
    scheduler = build_scheduler(optimizer, cfg.train, cfg.train.epochs * iters_per_epoch)
    file_names = train_set.file_names()
    nan_guard = NanGuard(cfg.train.nan_policy, cfg.train.max_nan_skips, output_dir, file_names)
    start_epoch, start_batch, global_step, best_score = 0, 0, 0, -math.inf

    last_path = output_dir / "last.pt"
    # Per-epoch accumulators, saved with last.pt so a mid-epoch resume continues them.
    epoch_stats: dict[str, dict] = {"running": {}, "task_sums": {}}
    if resume and last_path.is_file():
        _, state = load_checkpoint(last_path, map_location=device)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            balancer.load_state_dict(state["mtl"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"{last_path} does not fit this config (model, tasks, optimizer or mtl.method "
                f"changed?): {str(error).splitlines()[0]}"
            ) from None
        nan_guard.load_state_dict(state.get("nan_guard", {}))
        set_rng_state(state["rng"])
        epoch_stats = state.get("epoch_stats", epoch_stats)
        start_epoch, start_batch = int(state["epoch"]), int(state.get("batch", 0))
        global_step, best_score = int(state.get("step", 0)), float(state["best_score"])
        if is_main:
            print(f"resumed from {last_path} at epoch {start_epoch + 1}, batch {start_batch}")
    elif resume and is_main:
        print(f"--resume: no {last_path} yet, starting from scratch")
    if is_main and not resume and (output_dir / "metrics.jsonl").exists():
        (output_dir / "metrics.jsonl").unlink()  # a fresh run does not append to an old log

    def save_last(epoch: int, batch: int) -> None:
        """Everything needed to continue at (epoch, batch) exactly."""
        if is_main:
            save_checkpoint(
                last_path,
                cfg,
                model,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(),
                mtl=balancer.state_dict(),
                epoch_stats=epoch_stats,
                nan_guard=nan_guard.state_dict(),
                rng=rng_state(),
                epoch=epoch,
                batch=batch,
                step=global_step,
                best_score=best_score,
            )

    if is_main:
        print(
            f"model: {cfg.model.backbone.name}, tasks {cfg.model.tasks}, {cfg.mtl.sharing} sharing, "
            f"mtl.method={cfg.mtl.method}; device {device} x {dist_info.world_size}; "
            f"{len(train_set)} training images, {iters_per_epoch} iterations/epoch"
        )
        print(format_summary(model_summary(model, cfg.data.image_size)))
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        first_batch = start_batch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first_batch)
        model.train()
        if first_batch == 0:
            epoch_stats = {"running": {}, "task_sums": {}}
        running: dict[str, float] = epoch_stats["running"]
        task_sums: dict[str, list[float]] = epoch_stats["task_sums"]  # task -> [sum, count] (DWA)
        epoch_start = time.perf_counter()
        interaction: dict[str, str] = {}  # weights, gradient norms, worst cosine (mtl.log_every)
        progress = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            dynamic_ncols=True,
            mininterval=2.0,
            disable=not is_main,
        )
        for batch, (images, targets) in enumerate(progress, start=first_batch):
            images, targets = images.to(device, non_blocking=True), move_targets(targets, device)
            buffers = nan_guard.snapshot(model)
            with autocast(device, cfg.train.amp):
                losses, features = train_model(images, targets, return_features=True)
            losses = {name: value.float() for name, value in losses.items()}
            optimizer.zero_grad(set_to_none=True)
            if any_rank(bool(nan_guard.bad_losses(losses)), dist_info, device):
                nan_guard.handle(
                    losses, images, targets, model, buffers, epoch, batch, dist_info.rank
                )
            else:
                labelled = labelled_tasks(targets)
                task_losses = labelled_only(group_by_task(losses), labelled)
                shared = features if on_features else shared_params
                log_grads = cfg.mtl.log_every > 0 and global_step % cfg.mtl.log_every == 0
                grad_stats = gradient_stats(task_losses, shared, scaler) if log_grads else {}
                weights = balancer.backward(task_losses, shared, scaler)
                average_gradients(balancer.parameters(), dist_info)
                if cfg.train.clip_grad_norm > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                for name, value in {**task_losses, **losses}.items():
                    value = float(value.detach())
                    running[name] = 0.9 * running.get(name, value) + 0.1 * value
                for task, value in task_losses.items():
                    if task in labelled:
                        totals = task_sums.setdefault(task, [0.0, 0])
                        totals[0], totals[1] = totals[0] + float(value.detach()), totals[1] + 1
                if log_grads and is_main:
                    log_interaction(output_dir, global_step, task_losses, weights, grad_stats)
                    interaction = interaction_summary(weights, grad_stats)
            scheduler.step()
            global_step += 1
            if batch % max(cfg.train.log_every, 1) == 0:
                postfix = {k: f"{v:.3f}" for k, v in running.items() if "/" in k}
                progress.set_postfix({**postfix, **interaction})
            every = cfg.train.checkpoint_every
            if every and global_step % every == 0:
                save_last(epoch, batch + 1)
            halt = stop.requested or (
                stop_after_steps is not None and global_step >= stop_after_steps
            )
            if any_rank(halt, dist_info, device):
                save_last(epoch, batch + 1)
                if is_main:
                    print(f"stopped at epoch {epoch + 1}, batch {batch + 1}; resume with --resume")
                return {"interrupted": True, "step": global_step}
        means = {task: total / max(count, 1) for task, (total, count) in task_sums.items()}
        balancer.end_epoch(all_reduce_mean(means, dist_info, device))
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": global_step,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": round(time.perf_counter() - epoch_start, 2),
            **{
                f"loss/{k}": round(v, 5)
                for k, v in all_reduce_mean(running, dist_info, device).items()
            },
        }
        last_epoch = epoch + 1 == cfg.train.epochs
        if val_sets and ((epoch + 1) % cfg.train.eval_every == 0 or last_epoch):
            if is_main:
                metrics = val_sets.evaluate(model, cfg, device)
                record.update({k: v for k, v in metrics.items() if k != "per_class"})
                score = selection_score(metrics)
                if score > best_score:
                    best_score = score
                    save_checkpoint(
                        output_dir / "best.pt",
                        cfg,
                        model,
                        epoch=epoch + 1,
                        metrics=json.dumps(metrics),
                    )
            barrier(dist_info)
        if is_main:
            with open(output_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
        save_last(epoch + 1, 0)
    if dist_info.enabled:
        balancer_state = [v for v in balancer.state_dict().values() if isinstance(v, torch.Tensor)]
        if not tensors_in_sync(list(model.parameters()) + balancer_state, dist_info, device):
            raise TrainingError("ranks ended with different weights")
        if is_main:
            print(f"all {dist_info.world_size} ranks hold identical weights")
    if is_main:
        if not val_sets:
            save_checkpoint(output_dir / "best.pt", cfg, model, epoch=cfg.train.epochs)
        if metrics:
            (output_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
            print(format_metrics_table(metrics))
    return metrics
