"""The peer of the benchmark: torchvision's Mask R-CNN on a MobileNetV2-FPN backbone.

It reads the same COCO files as our model and starts from the same ImageNet weights (timm's
``mobilenetv2_100`` file, re-keyed), and is trained and evaluated with its own recipe,
:class:`~benchmarks.peer_recipe.PeerRecipe` (torchvision's ``references/detection``): it gets
un-normalised [0, 1] images at their original size, and its ``GeneralizedRCNNTransform``
normalises them and resizes the short side to ``min_size`` (long side at most ``max_size``).
"""

from __future__ import annotations

import copy
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from benchmarks.latency import median_latency_ms
from benchmarks.peer_recipe import (
    GroupedBatchSampler,
    PeerRecipe,
    aspect_ratio_groups,
    build_peer_optimizer,
    build_peer_scheduler,
)
from visionmtl.data import CocoDataset, DataError
from visionmtl.errors import TrainingError
from visionmtl.evaluation.coco_eval import CocoEvaluator
from visionmtl.evaluation.report import merge_metrics
from visionmtl.evaluation.semseg_eval import SemSegEvaluator
from visionmtl.models import BackboneError

ANCHOR_SIZES: tuple[tuple[int, ...], ...] = ((32, 64, 128, 256, 512),) * 3
ASPECT_RATIOS: tuple[tuple[float, ...], ...] = ((0.5, 1.0, 2.0),) * 3
MOBILENET_V2_STAGES: int = 6  # torchvision's _mobilenet_extractor: stem, 4 strided blocks, head
MASK_THRESH: float = 0.5  # mask probability -> binary mask, as torchvision's references do
SEMANTIC_SCORE_THRESH: float = 0.5  # instances painted into the semantic map for mIoU

# timm ``mobilenetv2_100`` names -> torchvision ``mobilenet_v2`` names.
_OUTER = {
    "conv_stem": "features.0.0",
    "bn1": "features.0.1",
    "classifier": "classifier.1",
}
_HEAD = {"conv_head": "0", "bn2": "1"}  # under features.<last>
_DEPTHWISE_SEPARABLE = {
    "conv_dw": "conv.0.0",
    "bn1": "conv.0.1",
    "conv_pw": "conv.1",
    "bn2": "conv.2",
}
_INVERTED_RESIDUAL = {
    "conv_pw": "conv.0.0",
    "bn1": "conv.0.1",
    "conv_dw": "conv.1.0",
    "bn2": "conv.1.1",
    "conv_pwl": "conv.2",
    "bn3": "conv.3",
}


def timm_to_torchvision_mobilenet_v2(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Re-key a timm ``mobilenetv2_100`` state dict to torchvision ``mobilenet_v2`` names.

    timm's ``blocks.<stage>.<block>`` become ``features.1 ... features.17`` in order, the stem
    ``features.0`` and the head conv ``features.18``. Raises ValueError on a key it cannot place.
    """
    blocks = sorted(
        {
            tuple(int(i) for i in key.split(".")[1:3])
            for key in state_dict
            if key.startswith("blocks.")
        }
    )
    feature_index = {block: position + 1 for position, block in enumerate(blocks)}
    head_index = len(blocks) + 1
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        parts = key.split(".")
        if parts[0] == "blocks" and len(parts) >= 5:
            stage, block = int(parts[1]), int(parts[2])
            prefix = f"blocks.{stage}.{block}"
            table = (
                _INVERTED_RESIDUAL
                if f"{prefix}.conv_pwl.weight" in state_dict
                else _DEPTHWISE_SEPARABLE
            )
            if parts[3] not in table:
                raise ValueError(f"cannot map timm key {key!r} to torchvision mobilenet_v2")
            name = f"features.{feature_index[(stage, block)]}.{table[parts[3]]}"
            out[".".join([name, *parts[4:]])] = tensor
        elif parts[0] in _OUTER:
            out[".".join([_OUTER[parts[0]], *parts[1:]])] = tensor
        elif parts[0] in _HEAD:
            out[".".join([f"features.{head_index}", _HEAD[parts[0]], *parts[1:]])] = tensor
        else:
            raise ValueError(f"cannot map timm key {key!r} to torchvision mobilenet_v2")
    return out


def load_backbone_weights(body: nn.Module, weights: str | Path) -> list[str]:
    """Load a timm-layout ``mobilenetv2_100`` file into the ``features`` body of the detector.

    Every tensor of ``body`` must come from the file (strict load, shapes checked). Returns the
    names of the loaded body tensors. Raises BackboneError naming the file and the problem."""
    path = Path(weights)
    if not path.is_file():
        raise BackboneError(f"peer backbone weights: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        mapped = timm_to_torchvision_mobilenet_v2(state)
    except (RuntimeError, ValueError, AttributeError, IndexError) as error:
        raise BackboneError(
            f"{path}: not a timm mobilenetv2_100 state dict ({error}); "
            "the peer needs ImageNet weights in timm's mobilenetv2_100 key layout"
        ) from None
    body_state = {
        key.removeprefix("features."): tensor
        for key, tensor in mapped.items()
        if key.startswith("features.") and not key.endswith("num_batches_tracked")
    }
    expected = body.state_dict()
    missing = sorted(set(expected) - set(body_state))
    wrong = [k for k in expected if k in body_state and body_state[k].shape != expected[k].shape]
    if missing or wrong:
        raise BackboneError(
            f"{path}: does not fit torchvision's mobilenet_v2 (missing {missing[:5]}, "
            f"wrong shape {wrong[:5]})"
        )
    body.load_state_dict({k: body_state[k] for k in expected}, strict=True)
    return list(expected)


def build_peer_maskrcnn(
    num_classes: int, weights: str | Path | None, recipe: PeerRecipe
) -> MaskRCNN:
    """Mask R-CNN, MobileNetV2-FPN, ``num_classes + 1`` classes, resizing to ``recipe.min_size`` /
    ``recipe.max_size``.

    ``weights``: timm-layout ``mobilenetv2_100`` ImageNet file: ``recipe.trainable_backbone_layers``
    trainable stages and frozen BatchNorm. None: random init, every stage trainable and plain
    BatchNorm, as torchvision's builders do without backbone weights."""
    pretrained = weights is not None
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v2",
        weights=None,
        fpn=True,
        norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
        trainable_layers=recipe.trainable_backbone_layers if pretrained else MOBILENET_V2_STAGES,
    )
    if weights is not None:
        load_backbone_weights(backbone.body, weights)
    anchors = AnchorGenerator(sizes=ANCHOR_SIZES, aspect_ratios=ASPECT_RATIOS)
    return MaskRCNN(
        backbone,
        num_classes=num_classes + 1,
        rpn_anchor_generator=anchors,
        min_size=recipe.min_size,
        max_size=recipe.max_size,
    )


class PeerTransform:
    """CocoDataset transform for the peer: RGB uint8 ``[H, W, 3]`` -> float ``[3, H, W]`` in [0, 1]
    at the original size (the model resizes and normalises), horizontal flip with ``hflip_prob``
    applied to the image, boxes, masks and semantic map together."""

    def __init__(self, hflip_prob: float = 0.0) -> None:
        self.hflip_prob = float(hflip_prob)

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        sem_seg: np.ndarray | None = None,
    ) -> dict[str, Tensor]:
        width = image.shape[1]
        flip = self.hflip_prob > 0 and float(torch.rand(())) < self.hflip_prob
        out: dict[str, Tensor] = {}
        image_tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        out["image"] = image_tensor.float().div_(255.0)
        if boxes is not None:
            box_tensor = torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4)
            if flip:
                box_tensor = torch.stack(
                    [
                        width - box_tensor[:, 2],
                        box_tensor[:, 1],
                        width - box_tensor[:, 0],
                        box_tensor[:, 3],
                    ],
                    dim=1,
                )
            out["boxes"] = box_tensor
            out["labels"] = torch.as_tensor(np.asarray(labels, np.int64)).reshape(-1)
        if masks is not None:
            out["masks"] = torch.as_tensor(np.asarray(masks, np.uint8))
        if sem_seg is not None:
            out["sem_seg"] = torch.as_tensor(np.asarray(sem_seg, np.int64))
        if flip:
            for key in ("image", "masks", "sem_seg"):
                if key in out:
                    out[key] = out[key].flip(-1)
        return out


def _collate_lists(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list, list]:
    """torchvision detection models take lists of differently sized images."""
    return [item[0] for item in batch], [item[1] for item in batch]


def peer_batches(
    dataset: CocoDataset, recipe: PeerRecipe, generator: torch.Generator
) -> Sampler[list[int]]:
    """Shuffled batches of ``recipe.batch_size``, grouped by aspect ratio unless the recipe's
    factor is negative (then a plain batch sampler that drops the last incomplete batch)."""
    order = RandomSampler(dataset, generator=generator)
    if recipe.aspect_ratio_group_factor < 0:
        return BatchSampler(order, recipe.batch_size, drop_last=True)
    groups = aspect_ratio_groups(dataset, recipe.aspect_ratio_group_factor)
    return GroupedBatchSampler(order, groups, recipe.batch_size)


def train_peer(
    model: MaskRCNN,
    dataset_train: CocoDataset,
    recipe: PeerRecipe,
    device: str | torch.device,
    num_workers: int = 0,
    seed: int = 0,
    max_iters: int | None = None,
) -> float:
    """Train the peer in place with ``recipe`` (SGD, warm-up + cosine, gradient-norm clipping,
    aspect-ratio grouped batches, horizontal flips). The data set's JSON and images are used with
    :class:`PeerTransform` (its own transform is replaced on a copy). ``max_iters`` stops early
    (smoke runs); the schedule is still the full run's. Returns the wall seconds of the loop."""
    device = torch.device(device)
    dataset = copy.copy(dataset_train)
    dataset.transform = PeerTransform(recipe.hflip_prob)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_sampler=peer_batches(dataset, recipe, generator),
        num_workers=num_workers,
        collate_fn=_collate_lists,
        generator=generator,
        persistent_workers=num_workers > 0,
    )
    if len(loader) == 0:
        raise TrainingError(
            f"{dataset.ann_file}: {len(dataset)} training images, fewer than one batch of "
            f"{recipe.batch_size}"
        )
    total_iters = recipe.epochs * len(loader)
    optimizer = build_peer_optimizer(model, recipe)
    scheduler = build_peer_scheduler(optimizer, recipe, len(loader), total_iters)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stop = total_iters if max_iters is None else min(total_iters, max_iters)
    model.to(device).train()
    step = 0
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        if step >= stop:
            break
        for images, targets in itertools.islice(loader, stop - step):
            losses = model(
                [image.to(device) for image in images], [_peer_target(t, device) for t in targets]
            )
            total = sum(losses.values())
            if not torch.isfinite(total):
                bad = [k for k, v in losses.items() if not torch.isfinite(v)]
                ids = [int(t["image_id"]) for t in targets]
                raise TrainingError(
                    f"peer: non-finite loss {bad} at epoch {epoch + 1}, step {step} (image ids {ids})"
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if recipe.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, recipe.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
    return time.perf_counter() - start


def _peer_target(target: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Our target -> torchvision's: labels shifted by one (0 is its background)."""
    if "masks" not in target:
        raise DataError(
            f"image {int(target['image_id'])}: has no instance masks; the peer Mask R-CNN needs "
            "a segmentation on every training annotation"
        )
    return {
        "boxes": target["boxes"].to(device),
        "labels": (target["labels"] + 1).to(device),
        "masks": target["masks"].to(device),
    }


def instances_to_semantic(
    masks: Tensor, labels: Tensor, scores: Tensor, score_thresh: float = SEMANTIC_SCORE_THRESH
) -> Tensor:
    """Paint binary instance masks ``[K, H, W]`` with contiguous ``labels`` ``[K]`` into a semantic
    map ``[H, W]`` int64 (0 background, label + 1 elsewhere). Instances with score below
    ``score_thresh`` are skipped; the others are painted by increasing score so higher scores win."""
    semantic = torch.zeros(masks.shape[-2:], dtype=torch.int64)
    for index in torch.argsort(scores, stable=True).tolist():
        if float(scores[index]) >= score_thresh:
            semantic[masks[index].bool()] = int(labels[index]) + 1
    return semantic


@torch.no_grad()
def evaluate_peer(
    model: MaskRCNN, dataset_val: CocoDataset, device: str | torch.device
) -> dict[str, Any]:
    """Box and mask AP (pycocotools, original size), mIoU of the instance masks painted into a
    semantic map (:func:`instances_to_semantic`), and ``infer_ms``: the median over the set of
    one image's forward at batch 1, from the RGB array (conversion, the model's resize and
    normalisation, mask pasting at the original size included; file decoding excluded).

    Returns flat metrics (``bbox_AP``, ``segm_AP``, ``mIoU``, ``infer_ms``, ...) and ``per_class``."""
    device = torch.device(device)
    coco_eval = CocoEvaluator.for_dataset(dataset_val, iou_types=("bbox", "segm"))
    sem_eval = SemSegEvaluator(
        len(dataset_val.class_names) + 1, ["background", *dataset_val.class_names]
    )
    was_training = model.training
    model.to(device).eval()

    def forward(array: np.ndarray) -> dict[str, Tensor]:
        image = torch.from_numpy(array).permute(2, 0, 1).to(device).float().div_(255.0)
        output = model([image])[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return output

    def process(index: int, output: dict[str, Tensor]) -> None:
        prediction = {
            "boxes": output["boxes"].cpu(),
            "scores": output["scores"].cpu(),
            "labels": output["labels"].cpu() - 1,
            "masks": output["masks"][:, 0].cpu() >= MASK_THRESH,
        }
        coco_eval.process([dataset_val.image_info(index)["id"]], [prediction])
        truth = dataset_val.original_sem_seg(index)
        if truth is not None:
            semantic = instances_to_semantic(
                prediction["masks"], prediction["labels"], prediction["scores"]
            )
            sem_eval.process([semantic], [torch.from_numpy(truth)])

    infer_ms = median_latency_ms(forward, dataset_val, on_output=process)
    model.train(was_training)
    metrics = merge_metrics(coco_eval.evaluate(), sem_eval.evaluate())
    metrics["infer_ms"] = infer_ms
    return metrics
