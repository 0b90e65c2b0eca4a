"""The training loop, top to bottom: data, model, optimisation, evaluation, checkpoints."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from visionmtl.config import Config
from visionmtl.data import CocoDataset, Collator, build_transforms
from visionmtl.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from visionmtl.engine.evaluate import evaluate_model, move_targets
from visionmtl.engine.optim import build_optimizer, build_scheduler
from visionmtl.engine.precision import autocast, make_scaler
from visionmtl.engine.report import format_metrics_table
from visionmtl.engine.rundir import prepare_run_dir
from visionmtl.models import build_model
from visionmtl.mtl import FixedWeighting


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, nothing to train on)."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # Each worker's numpy/random streams derive from torch's per-worker seed (reproducible).
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_datasets(cfg: Config) -> tuple[CocoDataset, CocoDataset | None]:
    """Training set (with augmentation) and validation set (eval resize), if configured."""
    data = cfg.data
    train_tf = build_transforms(
        data.image_size,
        train=True,
        scale_range=tuple(data.scale_range),
        hflip_prob=data.hflip_prob,
        color_jitter=data.color_jitter,
    )
    train_set = CocoDataset(data.train_ann, data.train_images, transform=train_tf)
    val_set = None
    if data.val_ann:
        val_set = CocoDataset(
            data.val_ann, data.val_images, transform=build_transforms(data.image_size, train=False)
        )
    return train_set, val_set


def with_dataset_classes(cfg: Config, dataset: CocoDataset) -> Config:
    """Fill ``model.num_classes``, ``class_names`` and ``category_ids`` from the training set."""
    model = replace(
        cfg.model,
        num_classes=len(dataset.category_ids),
        class_names=list(dataset.class_names),
        category_ids=list(dataset.category_ids),
    )
    return replace(cfg, model=model)


def selection_score(metrics: dict[str, Any]) -> float:
    """One number to pick ``best.pt``: mean of the main metric of each task present."""
    values = [metrics[k] for k in ("bbox_AP", "segm_AP", "mIoU") if metrics.get(k) is not None]
    return float(sum(values) / len(values)) if values else -1.0


def train(
    cfg: Config, output_dir: str | Path | None = None, resume: bool = False
) -> dict[str, Any]:
    """Train ``cfg`` and write ``config.yaml``, ``env.json``, ``last.pt``, ``best.pt``, ``metrics.jsonl``
    and ``eval.json`` into the output directory. Returns the final evaluation metrics."""
    output_dir = Path(output_dir or cfg.train.output_dir)
    device = resolve_device(cfg.train.device)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)

    train_set, val_set = build_datasets(cfg)
    cfg = with_dataset_classes(cfg, train_set)
    prepare_run_dir(output_dir, cfg)
    model = build_model(cfg.model, cfg.eval).to(device)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    loader = DataLoader(
        train_set,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=len(train_set) > cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        collate_fn=Collator(32),
        worker_init_fn=_seed_worker,
        generator=generator,
        persistent_workers=cfg.data.num_workers > 0,
    )
    if len(loader) == 0:
        raise TrainingError(f"{cfg.data.train_ann}: the training set has no images")
    total_iters = cfg.train.epochs * len(loader)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, total_iters)
    scaler = make_scaler(device, cfg.train.amp)
    weighting = FixedWeighting(cfg.mtl.weights)
    start_epoch, best_score = 0, -math.inf

    last_path = output_dir / "last.pt"
    if resume and last_path.is_file():
        _, state = load_checkpoint(last_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        weighting.load_state_dict(state["mtl"])
        set_rng_state(state["rng"])
        generator.set_state(state["loader_rng"])
        start_epoch, best_score = int(state["epoch"]), float(state["best_score"])
        print(f"resumed from {last_path} at epoch {start_epoch}")

    print(
        f"model: {cfg.model.backbone.name}, tasks {cfg.model.tasks}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; device {device}; "
        f"{len(train_set)} training images, {len(loader)} iterations/epoch"
    )
    metrics: dict[str, Any] = {}
    metrics_file = output_dir / "metrics.jsonl"
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        running: dict[str, float] = {}
        epoch_start = time.perf_counter()
        progress = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            dynamic_ncols=True,
            mininterval=2.0,
        )
        for step, (images, targets) in enumerate(progress):
            images, targets = images.to(device, non_blocking=True), move_targets(targets, device)
            with autocast(device, cfg.train.amp):
                losses = model(images, targets)
            total, _ = weighting.combine({k: v.float() for k, v in losses.items()})
            if not torch.isfinite(total):
                bad = [k for k, v in losses.items() if not torch.isfinite(v)]
                ids = [int(t["image_id"]) for t in targets]
                raise TrainingError(
                    f"non-finite loss {bad} at epoch {epoch + 1}, step {step} (image ids {ids})"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if cfg.train.clip_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for name, value in losses.items():
                value = float(value.detach())
                running[name] = 0.9 * running.get(name, value) + 0.1 * value
            if step % max(cfg.train.log_every, 1) == 0:
                progress.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": round(time.perf_counter() - epoch_start, 2),
            **{f"loss/{k}": round(v, 5) for k, v in running.items()},
        }
        last_epoch = epoch + 1 == cfg.train.epochs
        if val_set is not None and ((epoch + 1) % cfg.train.eval_every == 0 or last_epoch):
            metrics = evaluate_model(model, val_set, cfg, device)
            record.update({k: v for k, v in metrics.items() if k != "per_class"})
            score = selection_score(metrics)
            if score > best_score:
                best_score = score
                save_checkpoint(
                    output_dir / "best.pt", cfg, model, epoch=epoch + 1, metrics=_plain(metrics)
                )
        with open(metrics_file, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        save_checkpoint(
            last_path,
            cfg,
            model,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict(),
            mtl=weighting.state_dict(),
            rng=rng_state(),
            loader_rng=generator.get_state(),
            epoch=epoch + 1,
            best_score=best_score,
        )
    if val_set is None:
        save_checkpoint(output_dir / "best.pt", cfg, model, epoch=cfg.train.epochs)
    if metrics:
        (output_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(format_metrics_table(metrics))
    return metrics


def _plain(metrics: dict[str, Any]) -> str:
    """Metrics as JSON text (checkpoints hold plain data only)."""
    return json.dumps(metrics)
