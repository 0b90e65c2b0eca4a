"""Run a model over a COCO-format data set and compute box AP and mIoU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from visionmtl.config import Config
from visionmtl.data import SIZE_DIVISOR, CocoDataset, Collator, DataError, SemanticPngDataset
from visionmtl.data.batching import worker_options
from visionmtl.evaluation.coco_eval import CocoEvaluator, ground_truth_changes
from visionmtl.evaluation.report import merge_metrics
from visionmtl.evaluation.semseg_eval import SemSegEvaluator
from visionmtl.precision import inference_autocast, inference_precision
from visionmtl.structures import BACKGROUND, ClassSpec


@dataclass
class Evaluation:
    """The evaluators after one pass of a model over ``dataset``. AP and mIoU come from
    :meth:`metrics`; result files and confusion matrices (``visionmtl.evaluation.export``) read
    the same evaluators, so they describe exactly the predictions that were scored."""

    dataset: CocoDataset | SemanticPngDataset
    coco: CocoEvaluator | None = None
    sem: SemSegEvaluator | None = None
    info: dict[str, Any] = field(default_factory=dict)  # how it was measured (_provenance)

    def metrics(self) -> dict[str, Any]:
        """Flat metrics and ``per_class`` of the evaluators, then ``info`` (see evaluate_model)."""
        results = [e.evaluate() for e in (self.coco, self.sem) if e is not None]
        return merge_metrics(*results, self.info)

    def shard_state(self) -> dict[str, Any]:
        """The evaluators' state after a pass over one shard of the images (``run_evaluation``'s
        ``shard``): plain picklable data for :meth:`add_shard` on the rank that scores."""
        return {
            "coco": self.coco and self.coco.shard_state(),
            "sem": self.sem and self.sem.shard_state(),
        }

    def add_shard(self, state: dict[str, Any]) -> None:
        """Take another shard's predictions (its :meth:`shard_state`) before scoring."""
        for evaluator, part in ((self.coco, state["coco"]), (self.sem, state["sem"])):
            if evaluator is not None:
                evaluator.add_shard(part)


def combined_metrics(evaluations: Sequence[Evaluation]) -> dict[str, Any]:
    """The metrics of several evaluations (e.g. AP on a COCO set, mIoU on a PNG set) as one dict."""
    return merge_metrics(*(evaluation.metrics() for evaluation in evaluations))


def evaluate_model(
    model: nn.Module,
    dataset: CocoDataset | SemanticPngDataset,
    cfg: Config,
    device: torch.device,
    **options: Any,
) -> dict[str, Any]:
    """Box and mask AP (pycocotools, original image coordinates, JSON category ids) and mIoU (at the
    original resolution, against the semantic map rasterised from the annotations).

    ``dataset`` is a COCO set, or a semantic PNG set (mIoU only; its ids must be the semantic
    head's); ``options`` are :func:`run_evaluation`'s ``num_workers`` and ``tasks``. Inference runs
    in ``eval.amp``. Returns flat metrics (``bbox_AP``, ``bbox_AP50``, ..., ``segm_AP``, ...,
    ``mIoU``, ``pixel_acc``), ``per_class``, ``eval_precision`` and, when AP is scored, the
    ground-truth annotations the data policy dropped / fixed (``gt_annotations_dropped`` /
    ``gt_annotations_fixed``: AP is scored on the cleaned set)."""
    return run_evaluation(model, dataset, cfg, device, **options).metrics()


@torch.no_grad()
def run_evaluation(
    model: nn.Module,
    dataset: CocoDataset | SemanticPngDataset,
    cfg: Config,
    device: torch.device,
    num_workers: int = 0,
    tasks: Sequence[str] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Evaluation:
    """The pass over ``dataset`` that :func:`evaluate_model` scores, with its evaluators filled.

    ``num_workers``: of the data loader; ``tasks``: what is scored (default: the model's tasks);
    ``shard``: (rank, world size) to infer only images rank, rank + world size, ... (each rank of a
    distributed run takes its share; one rank then scores them all after
    :meth:`Evaluation.add_shard` of the others' :meth:`Evaluation.shard_state`)."""
    tasks = list(cfg.model.tasks if tasks is None else tasks)
    classes: ClassSpec = getattr(model, "module", model).classes  # the model, or it under DDP
    if isinstance(dataset, SemanticPngDataset):
        tasks = [task for task in tasks if task == "sem"]
        sem_names = list(classes.sem_names)
    else:
        sem_names = dataset.sem_class_names
    coco_tasks = isinstance(dataset, CocoDataset) and "det" in tasks
    if coco_tasks and list(dataset.category_ids) != list(classes.category_ids):
        raise DataError(
            f"{dataset.ann_file}: categories {dataset.category_ids} differ from the model's "
            f"{list(classes.category_ids)}; evaluate on a set with the training categories"
        )
    if "sem" in tasks and classes.has_own_sem_classes and sem_names != list(classes.sem_names):
        raise DataError(
            f"{dataset.ann_file}: semantic classes {sem_names} differ from the "
            f"model's model.sem.class_names {list(classes.sem_names)}; build the data set with "
            "sem_classes=model.sem.class_names"
        )
    rank, world_size = shard
    images = dataset if world_size == 1 else Subset(dataset, range(rank, len(dataset), world_size))
    loader = DataLoader(
        images,
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        collate_fn=Collator(SIZE_DIVISOR),
        **worker_options(num_workers),
    )
    iou_types = ("bbox", "segm") if "inst" in tasks else ("bbox",)
    coco_eval = (
        CocoEvaluator.for_dataset(dataset, iou_types, engine=cfg.eval.coco_engine)
        if coco_tasks
        else None
    )
    sem_eval = None
    if "sem" in tasks:
        names = [BACKGROUND, *sem_names]
        sem_eval = SemSegEvaluator(len(names), names, background=classes.sem_background)
    was_training = model.training
    model.eval()
    # By image id, not loader position: a corrupt image is replaced by the next one in skip mode,
    # which may be another shard's: each image is scored by the rank whose shard holds it.
    index_of = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    scored: set[int] = set()
    for images, targets in loader:
        image_sizes = [tuple(t["image_size"].tolist()) for t in targets]
        orig_sizes = [tuple(t["orig_size"].tolist()) for t in targets]
        with inference_autocast(device, cfg.eval.amp):
            predictions = model(images.to(device), image_sizes=image_sizes, output_sizes=orig_sizes)
        predictions = [{k: v.cpu() for k, v in p.items()} for p in predictions]
        if coco_eval is not None:
            coco_eval.process([int(t["image_id"]) for t in targets], predictions)
        if sem_eval is not None:
            for target, prediction in zip(targets, predictions, strict=True):
                image_id = int(target["image_id"])
                if image_id in scored or index_of[image_id] % world_size != rank:
                    continue
                scored.add(image_id)
                truth = dataset.original_sem_seg(index_of[image_id])
                if truth is not None:  # images without segmentation are not scored for sem
                    sem_eval.process([prediction["sem_seg"]], [torch.from_numpy(truth)])
    model.train(was_training)
    info = _provenance(dataset, coco_eval is not None, cfg, device)
    return Evaluation(dataset, coco_eval, sem_eval, info)


def _provenance(
    dataset: CocoDataset | SemanticPngDataset, scored_coco: bool, cfg: Config, device: torch.device
) -> dict[str, Any]:
    """What the numbers were measured with: the inference precision and, for COCO AP, how many
    of the file's annotations the data policy (``data.on_invalid``) dropped or fixed."""
    info: dict[str, Any] = {"eval_precision": inference_precision(device, cfg.eval.amp)}
    if scored_coco:
        info.update(ground_truth_changes(dataset))
    return info
