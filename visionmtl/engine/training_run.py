"""The parts of one training (model, loader, optimizer, lr schedule, loss scaler, task balancer,
NaN guard) and its progress, saved to and restored from ``last.pt`` so a resume is exact."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from visionmtl.config import Config
from visionmtl.data import SIZE_DIVISOR, Collator, MixedDataset
from visionmtl.data.batching import DeviceInput, orientation_groups, worker_options
from visionmtl.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from visionmtl.engine.distributed import DistInfo, gather_objects
from visionmtl.engine.finetune import init_from_checkpoint
from visionmtl.engine.loggers import RunLogger
from visionmtl.engine.nan_guard import NanGuard
from visionmtl.engine.optim import build_optimizer, build_scheduler
from visionmtl.engine.sampler import EpochSampler, SeededDataset
from visionmtl.errors import TrainingError
from visionmtl.evaluation.validation import ValidationSets
from visionmtl.models import MultiTaskModel, build_model
from visionmtl.models.backbone import input_normalization
from visionmtl.models.norm import sync_batchnorm
from visionmtl.mtl import build_balancer
from visionmtl.precision import make_scaler
from visionmtl.structures import ClassSpec


def fresh_epoch_stats() -> dict[str, dict]:
    """Running loss averages (name -> value) and per-task loss sums (task -> [sum, count], DWA)."""
    return {"running": {}, "task_sums": {}}


def own_rng_state(state: dict, dist_info: DistInfo, path: Path) -> dict:
    """This rank's RNG states from ``last.pt`` (``rng_per_rank``: each rank draws from its own
    CPU/CUDA generators, e.g. the mask head's box sampling); rank 0's (``rng``) where the file has
    none for it (an older file, another world size: the resume is then not bit-exact)."""
    per_rank = state.get("rng_per_rank") or []
    if len(per_rank) == dist_info.world_size:
        return per_rank[dist_info.rank]
    if dist_info.enabled and dist_info.is_main:
        print(
            f"{path}: RNG states saved for {len(per_rank) or 1} rank(s), resuming on "
            f"{dist_info.world_size}: every rank continues from rank 0's"
        )
    return state["rng"]


@dataclass
class Progress:
    """Where a training stands: the next batch to run (``epoch``, ``batch``), the step count, the
    best selection score and the epoch's accumulators (:func:`fresh_epoch_stats`)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_score: float = -math.inf
    epoch_stats: dict[str, dict] = field(default_factory=fresh_epoch_stats)


class TrainingRun:
    """Everything the training loop works with, built from the config in a fixed order (the
    order in which random numbers are drawn is part of an exact resume).

    ``train_model`` is ``model``, or ``model`` wrapped in DistributedDataParallel under torchrun;
    ``shared_params`` are the trainable parameters where task gradients meet (the backbone's and
    neck's; the backbone's and the mixing weights with cross-stitch)."""

    def __init__(
        self,
        cfg: Config,
        classes: ClassSpec,
        train_set: MixedDataset,
        val_sets: ValidationSets,
        output_dir: Path,
        resume: bool,
        device: torch.device,
        dist_info: DistInfo,
    ) -> None:
        self.cfg, self.classes, self.val_sets, self.output_dir = cfg, classes, val_sets, output_dir
        self.device, self.dist_info = device, dist_info
        self.last_path = output_dir / "last.pt"
        self.model, self.train_model = self._build_model(resume and self.last_path.is_file())
        self.graph_breaks_shown = False  # train.compile: reported once, after the first step
        # timm's EMA (a copy of the model, updated in place after each step). Every rank keeps
        # one (the parameters agree; BatchNorm buffers may differ off rank 0, whose buffers
        # every rank takes before validating and whose copy is saved).
        self.ema = (
            ModelEmaV3(self.model, decay=cfg.train.ema, use_warmup=True) if cfg.train.ema else None
        )
        self.sampler, self.loader = self._build_loader(train_set)
        # the loader's uint8 batches, normalised on the device with the run's input statistics
        self.device_input = DeviceInput(
            *input_normalization(cfg), device, channels_last=cfg.train.channels_last
        )
        self.iters_per_epoch = self.sampler.batches_per_epoch()
        if self.iters_per_epoch == 0:
            raise TrainingError(f"{cfg.data.train_ann}: the training set has no images")
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.scaler = make_scaler(device, cfg.train.amp)
        self.balancer = build_balancer(cfg.mtl, cfg.model.tasks, device=device)
        if self.balancer.parameters():  # learned task weights (uncertainty) train with the network
            self.optimizer.add_param_group(
                {"params": self.balancer.parameters(), "weight_decay": 0.0, "name": "balancer"}
            )
        self.shared_params = [p for p in self.model.shared_parameters() if p.requires_grad]
        self.scheduler = build_scheduler(
            self.optimizer, cfg.train, cfg.train.epochs * self.iters_per_epoch
        )
        self.nan_guard = NanGuard(
            cfg.train.nan_policy, cfg.train.max_nan_skips, output_dir, train_set.file_names()
        )
        # Rank 0's metric loggers, opened by the loop once the step it starts from is known.
        self.logger: RunLogger | None = None

    @property
    def is_main(self) -> bool:
        return self.dist_info.is_main

    @property
    def eval_model(self) -> MultiTaskModel:
        """The weights validation scores and ``best.pt`` keeps: the EMA's when ``train.ema``."""
        return self.model if self.ema is None else self.ema.module

    def _build_model(self, resuming: bool) -> tuple[MultiTaskModel, nn.Module]:
        """The model on the device, from ``model.init_from`` unless resuming, and the module to
        train (the model, or the model in DistributedDataParallel)."""
        cfg, dist_info = self.cfg, self.dist_info
        model_cfg = cfg.model
        if model_cfg.init_from:  # the checkpoint holds the backbone: fetch no other weights
            no_weights = replace(model_cfg.backbone, pretrained=False, weights=None)
            model_cfg = replace(model_cfg, backbone=no_weights)
        model = build_model(model_cfg, self.classes, cfg.eval, sharing=cfg.mtl.sharing)
        if cfg.model.init_from and not resuming:
            report = init_from_checkpoint(model, cfg, cfg.model.init_from)
            if dist_info.is_main:
                print(report.summary(cfg.model.init_from))
        model = model.to(self.device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if dist_info.enabled and cfg.train.sync_bn:
            model = sync_batchnorm(model)
        train_model = DistributedDataParallel(model) if dist_info.enabled else model
        # Only the training forward is compiled: checkpoints and evaluation use `model` itself.
        return model, torch.compile(train_model) if cfg.train.compile else train_model

    def _build_loader(self, train_set: MixedDataset) -> tuple[EpochSampler, DataLoader]:
        """This rank's shuffled batches of the training set; the sampler can start mid-epoch."""
        cfg, dist_info = self.cfg, self.dist_info
        batch_size = cfg.data.batch_size
        sampler = EpochSampler(
            len(train_set),
            batch_size,
            seed=cfg.train.seed,
            rank=dist_info.rank,
            world_size=dist_info.world_size,
            drop_last=len(train_set) > batch_size * dist_info.world_size,
            groups=orientation_groups(train_set) if cfg.data.aspect_ratio_grouping else None,
        )
        loader = DataLoader(
            SeededDataset(train_set),
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=Collator(SIZE_DIVISOR),
            persistent_workers=cfg.data.num_workers > 0,
            # Page-locked batches make the non-blocking copies to the GPU truly asynchronous.
            pin_memory=self.device.type == "cuda",
            **worker_options(cfg.data.num_workers),
            # Worker base seeds from a generator of the loader's own, not the global RNG: the
            # training steps draw from that (mask-head box jitter), and an iterator made on
            # resume must not advance it (samples are seeded by the sampler, not by workers).
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )
        return sampler, loader

    def _check_param_groups(self, saved: list[dict]) -> None:
        """Optimizer state is restored group by group, by position: groups of another layout
        (``train.head_lr`` changed) would take the wrong parameters' state. ``last.pt`` files
        from before the groups had names are not checked."""
        names = [group.get("name") for group in saved]
        wanted = [group.get("name") for group in self.optimizer.param_groups]
        if all(names) and names != wanted:
            raise CheckpointError(
                f"{self.last_path}: its optimizer groups are {names} but this config makes "
                f"{wanted} (train.head_lr or mtl.method changed?); resume with the run's config"
            )

    def restore(self, resume: bool) -> Progress:
        """With ``resume`` and a ``last.pt``: model, optimizer, schedule, scaler, balancer, NaN
        guard and RNG states as they were saved, and the progress to continue from; else a fresh
        start."""
        if not (resume and self.last_path.is_file()):
            if resume and self.is_main:
                print(f"--resume: no {self.last_path} yet, starting from scratch")
            return Progress()
        _, state = load_checkpoint(self.last_path, map_location=self.device)
        self._check_param_groups(state["optimizer"]["param_groups"])
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.balancer.load_state_dict(state["mtl"])
            if self.ema is not None and "ema" in state:
                self.ema.load_state_dict(state["ema"])
            elif self.ema is not None:  # train.ema turned on for a run saved without it
                self.ema = ModelEmaV3(self.model, decay=self.cfg.train.ema, use_warmup=True)
                if self.is_main:
                    print(f"{self.last_path} has no EMA: it starts from the resumed weights")
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"{self.last_path} does not fit this config (model, tasks, optimizer, "
                f"train.head_lr or mtl.method changed?): {str(error).splitlines()[0]}"
            ) from None
        self.nan_guard.load_state_dict(state.get("nan_guard", {}))
        set_rng_state(own_rng_state(state, self.dist_info, self.last_path))
        progress = Progress(
            epoch=int(state["epoch"]),
            batch=int(state.get("batch", 0)),
            step=int(state.get("step", 0)),
            best_score=float(state["best_score"]),
            epoch_stats=state.get("epoch_stats", fresh_epoch_stats()),
        )
        if self.is_main:
            print(
                f"resumed from {self.last_path} at epoch {progress.epoch + 1}, "
                f"batch {progress.batch}"
            )
        return progress

    def save_last(self, progress: Progress) -> None:
        """``last.pt``: everything needed to continue at ``progress`` exactly (rank 0 writes; every
        rank calls it, since each rank's RNG states are gathered into the file)."""
        rng_per_rank = gather_objects(rng_state(), self.dist_info)
        if not self.is_main:
            return
        save_checkpoint(
            self.last_path,
            self.cfg,
            self.model,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            mtl=self.balancer.state_dict(),
            epoch_stats=progress.epoch_stats,
            nan_guard=self.nan_guard.state_dict(),
            rng=rng_per_rank[0],
            rng_per_rank=rng_per_rank,
            epoch=progress.epoch,
            batch=progress.batch,
            step=progress.step,
            best_score=progress.best_score,
            **({} if self.ema is None else {"ema": self.ema.state_dict()}),
        )
