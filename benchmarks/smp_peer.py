"""The semantic segmentation peer: segmentation_models_pytorch's FPN with a timm MobileNetV2 encoder.

``pip install segmentation-models-pytorch`` for the benchmark only (not a visionmtl dependency).
The peer starts from the same ImageNet file as our model (timm's ``mobilenetv2_100`` layout, which
smp's ``tu-`` encoders wrap unchanged), reads the same PNG sets through the same training
transform (image size, rescaling, flips, colour jitter) for the same epochs, and is trained with
the optimiser and loss of smp's own CamVid example (examples/camvid_segmentation_multiclass.ipynb:
``DiceLoss(MULTICLASS_MODE, from_logits=True)``, ``Adam(lr=2e-4)``, cosine to ``eta_min=1e-5``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from benchmarks.latency import median_latency_ms
from visionmtl.data import Collator, SemanticPngDataset
from visionmtl.data.batching import DeviceInput
from visionmtl.data.transforms import Transform
from visionmtl.evaluation.semseg_eval import SemSegEvaluator
from visionmtl.models import BackboneError
from visionmtl.structures import IGNORE_INDEX

ENCODER = "tu-mobilenetv2_100"
PAD_MULTIPLE = 32  # smp's FPN needs sides divisible by its output stride


@dataclass(frozen=True)
class SmpRecipe:
    """smp's CamVid example: Adam, Dice loss, cosine decay per step. Its batch of 32 and 50
    epochs are replaced by ours (the same data budget for both models); its ``T_max=50`` steps
    (a restart every 100 steps, not the ``T_MAX`` it computes) by one decay over the run."""

    lr: float = 2e-4
    min_lr: float = 1e-5
    batch_size: int = 8
    epochs: int = 20

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "loss": "DiceLoss(multiclass, from_logits)", "optimizer": "Adam"}


def build_smp_fpn(num_classes: int, weights: str | Path | None) -> nn.Module:
    """smp.FPN on ``tu-mobilenetv2_100`` with ``num_classes`` outputs, its encoder loaded from the
    timm file ``weights`` (every encoder tensor must come from it)."""
    import segmentation_models_pytorch as smp

    model = smp.FPN(encoder_name=ENCODER, encoder_weights=None, classes=num_classes)
    if weights is None:
        return model
    path = Path(weights)
    if not path.is_file():
        raise BackboneError(f"peer encoder weights: file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoder = model.encoder.model
    expected = encoder.state_dict()
    missing = sorted(k for k in expected if k not in state or state[k].shape != expected[k].shape)
    if missing:
        raise BackboneError(f"{path}: does not fit smp's {ENCODER} encoder (missing {missing[:5]})")
    encoder.load_state_dict({k: state[k] for k in expected}, strict=True)
    return model


def _batch(
    batch: tuple[Tensor, list[dict[str, Tensor]]], to_device: DeviceInput
) -> tuple[Tensor, Tensor]:
    """Padded images [B, 3, H, W] (normalised on the device, as ours) and labels [B, H, W] in
    0..K-1 (the head's ids 1..K shifted down), 255 on padding and ignored pixels."""
    images, targets = batch
    labels = torch.full((images.shape[0], *images.shape[-2:]), IGNORE_INDEX, dtype=torch.int64)
    for i, target in enumerate(targets):
        sem = target["sem_seg"].long()
        labels[i, : sem.shape[0], : sem.shape[1]] = torch.where(sem == IGNORE_INDEX, sem, sem - 1)
    return to_device.images(images, targets), labels.to(to_device.device)


def train_smp(
    model: nn.Module,
    dataset: SemanticPngDataset,
    recipe: SmpRecipe,
    device: torch.device,
    num_workers: int = 0,
    seed: int = 0,
) -> float:
    """Train in place with ``recipe`` on ``dataset`` (its own training transform); returns the
    wall seconds of the loop."""
    import segmentation_models_pytorch as smp

    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=recipe.batch_size,
        shuffle=True,
        drop_last=len(dataset) > recipe.batch_size,
        num_workers=num_workers,
        collate_fn=Collator(PAD_MULTIPLE),
        generator=generator,
        persistent_workers=num_workers > 0,
    )
    loss_fn = smp.losses.DiceLoss(
        smp.losses.MULTICLASS_MODE, from_logits=True, ignore_index=IGNORE_INDEX
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=recipe.epochs * len(loader), eta_min=recipe.min_lr
    )
    model.to(device).train()
    to_device = DeviceInput(dataset.transform.mean, dataset.transform.std, device)
    start = time.perf_counter()
    for _ in range(recipe.epochs):
        for batch in loader:
            images, labels = _batch(batch, to_device)
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return time.perf_counter() - start


class SmpPredictor:
    """Decoded RGB array -> class map [H, W] (the head's ids 1..K) at the original size, with the
    same evaluation transform as ours (resize to the longest side, normalisation)."""

    def __init__(self, model: nn.Module, transform: Transform, device: torch.device) -> None:
        self.model, self.transform, self.device = model.eval(), transform, device

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Tensor:
        tensor = self.transform(image)["image"]
        height, width = tensor.shape[-2:]
        pad_h, pad_w = (-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE
        batch = F.pad(tensor[None], (0, pad_w, 0, pad_h)).to(self.device)
        logits = self.model(batch)[:, :, :height, :width]
        logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
        return logits[0].argmax(0).cpu() + 1


def evaluate_smp(
    model: nn.Module,
    val_set: SemanticPngDataset,
    sem_names: list[str],
    transform: Transform,
    device: torch.device,
) -> dict[str, Any]:
    """mIoU, per-class IoU and pixel accuracy on ``val_set`` (read in the ids of a head of
    ``sem_names``) at the original size, by the same evaluator as ours (no background class),
    and the median ms per image at batch 1."""
    names = ["background", *sem_names]
    evaluator = SemSegEvaluator(len(names), names, background=False)

    def score(index: int, prediction: Tensor) -> None:
        truth = torch.from_numpy(val_set.original_sem_seg(index))
        evaluator.process([prediction], [truth])

    infer_ms = median_latency_ms(SmpPredictor(model, transform, device), val_set, score)
    return {**evaluator.evaluate(), "infer_ms": infer_ms}
