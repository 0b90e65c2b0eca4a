"""The validation sets of a run: the COCO set (``data.val_ann``) and, optionally, a semantic PNG
set (``data.val_sem_*``) that scores mIoU where COCO cannot (e.g. stuff classes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from visionmtl.config import Config
from visionmtl.data import CocoDataset, SemanticPngDataset, Transform, build_transforms
from visionmtl.data.records import cache_dir
from visionmtl.data.sources import png_dataset
from visionmtl.evaluation.evaluate import Evaluation, run_evaluation
from visionmtl.models.backbone import input_normalization
from visionmtl.structures import ClassSpec


@dataclass
class ValidationSets:
    """``coco`` scores every task it labels; when ``sem_png`` is there it scores ``sem`` instead."""

    coco: CocoDataset | None = None
    sem_png: SemanticPngDataset | None = None

    def __bool__(self) -> bool:
        return self.coco is not None or self.sem_png is not None

    def run(
        self, model: nn.Module, cfg: Config, device: torch.device, shard: tuple[int, int] = (0, 1)
    ) -> list[Evaluation]:
        """One :class:`Evaluation` per set that scores something (the COCO set first), over
        ``shard`` (rank, world size) of each set's images (:func:`run_evaluation`)."""
        parts = []
        if self.coco is not None:
            tasks = [t for t in cfg.model.tasks if not (t == "sem" and self.sem_png is not None)]
            if tasks:
                parts.append(
                    run_evaluation(model, self.coco, cfg, device, tasks=tasks, shard=shard)
                )
        if self.sem_png is not None and "sem" in cfg.model.tasks:
            parts.append(
                run_evaluation(model, self.sem_png, cfg, device, tasks=["sem"], shard=shard)
            )
        return parts


def eval_transform(cfg: Config) -> Transform:
    """The evaluation preprocessing of ``cfg``'s model (validation, tools/eval.py, Predictor):
    :func:`eval_transform_for` its ``data.image_size`` and the run's statistics
    (``input_normalization``)."""
    mean, std = input_normalization(cfg)
    return eval_transform_for(cfg.data.image_size, mean, std)


def eval_transform_for(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Transform:
    """The evaluation preprocessing: resize to ``image_size`` (``data.image_size``), normalise
    with ``mean`` and ``std`` (RGB, on pixels / 255). The one recipe of validation, ``Predictor``
    and ``OnnxPredictor`` (which reads the values from ``model.json``)."""
    return build_transforms(image_size, train=False, mean=mean, std=std)


def train_transform(cfg: Config) -> Transform:
    """The training augmentation of ``cfg`` (``data.image_size``, ``scale_range``, flips, colour
    jitter) with the run's input statistics (``input_normalization``)."""
    data = cfg.data
    mean, std = input_normalization(cfg)
    return build_transforms(
        data.image_size,
        train=True,
        scale_range=tuple(data.scale_range),
        hflip_prob=data.hflip_prob,
        color_jitter=data.color_jitter,
        mean=mean,
        std=std,
        compact=True,  # uint8 out of the workers; DeviceInput normalises on the device
    )


def semantic_png_val_set(cfg: Config, classes: ClassSpec) -> SemanticPngDataset | None:
    """``data.val_sem_*`` as a data set in the ids of the semantic head of ``classes``."""
    data = cfg.data
    if not data.val_sem_masks:
        return None
    return png_eval_set(cfg, classes, data.val_sem_images, data.val_sem_masks, **run_png_ids(cfg))


def png_eval_set(
    cfg: Config,
    classes: ClassSpec,
    images: str,
    masks: str,
    class_names: Sequence[str] = (),
    ids: Mapping[int, str] | None = None,
    ignore_ids: Sequence[int] = (),
    transform: Transform | None = None,
) -> SemanticPngDataset:
    """A PNG label set (ids declared as in ``SourceConfig``; none: the model's own semantic ids,
    0 background, k = ``classes.sem_names[k - 1]``, 255 ignore) with ``transform`` (default:
    the evaluation preprocessing of ``cfg``), in the ids of the semantic head of ``classes``."""
    where = "model.sem.class_names" if classes.has_own_sem_classes else "the training categories"
    if not class_names and not ids:
        ids = classes.sem_ids
    return png_dataset(
        images,
        masks,
        list(classes.sem_names),
        where,
        class_names=class_names,
        ids=ids,
        ignore_ids=ignore_ids,
        background=classes.sem_background,
        transform=transform if transform is not None else eval_transform(cfg),
    )


def coco_val_set(cfg: Config, ann: str, images: str) -> CocoDataset:
    """A COCO evaluation set with the run's preprocessing, data policy and semantic classes."""
    return CocoDataset(
        ann,
        images,
        transform=eval_transform(cfg),
        on_invalid=cfg.data.on_invalid,
        max_bad_fraction=cfg.data.max_bad_image_fraction,
        sem_classes=cfg.model.sem.class_names,
        tasks=cfg.model.tasks,
        cache_dir=cache_dir(cfg.data.cache),
    )


def build_validation_sets(cfg: Config, classes: ClassSpec) -> ValidationSets:
    """The configured validation sets for a model of ``classes``."""
    data = cfg.data
    coco = coco_val_set(cfg, data.val_ann, data.val_images) if data.val_ann else None
    return ValidationSets(coco, semantic_png_val_set(cfg, classes))


def run_png_ids(cfg: Config) -> dict[str, Any]:
    """How the run's PNG label sets declare their ids (``class_names`` / ``ids`` /
    ``ignore_ids`` for :func:`png_eval_set`): its ``data.val_sem_*`` set, else its first PNG
    training source, else nothing (the semantic head's own ids)."""
    data = cfg.data
    if data.val_sem_masks:
        return {
            "class_names": data.val_sem_class_names,
            "ids": data.val_sem_ids,
            "ignore_ids": data.val_sem_ignore_ids,
        }
    for source in data.extra_sources:
        if source.sem_masks:
            names, ids, ignore = source.class_names, source.ids, source.ignore_ids
            return {"class_names": names, "ids": ids, "ignore_ids": ignore}
    return {}
