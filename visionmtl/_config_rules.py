"""Value checks of the config schema: one rule per dotted field, and checks across fields."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from visionmtl.config_schema import (
    AMP_MODES,
    GRAD_TARGETS,
    MTL_METHODS,
    MTL_SHARING,
    NAN_POLICIES,
    ON_INVALID,
    OPTIMIZERS,
    TASKS,
    Config,
    ConfigError,
    SourceConfig,
)

_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def _rule(ok: Callable[[Any], bool], expected: str) -> Callable[[Any], str | None]:
    """A field check: None when ``ok(value)``, else the problem."""
    return lambda value: None if ok(value) else f"expected {expected}, got {value!r}"


def _one_of(choices: Sequence[str]) -> Callable[[Any], str | None]:
    return _rule(lambda value: value in choices, f"one of {', '.join(map(repr, choices))}")


def _distinct_tasks(tasks: list[str]) -> bool:
    # Instance masks are predicted inside detected boxes, so "inst" needs "det".
    distinct = bool(tasks) and set(tasks) <= set(TASKS) and len(set(tasks)) == len(tasks)
    return distinct and ("inst" not in tasks or "det" in tasks)


_POSITIVE = _rule(lambda value: value >= 1, "an int >= 1")
_NON_NEGATIVE = _rule(lambda value: value >= 0, "a number >= 0")
_PROBABILITY = _rule(lambda value: 0 <= value <= 1, "a number in [0, 1]")
_DISTINCT_NAMES = _rule(
    lambda names: len(set(names)) == len(names) and all(names), "distinct, non-empty names"
)

# Per-field checks, keyed by dotted path; run whenever that field is set (file, dict or override).
_FIELD_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "model.backbone.out_strides": _rule(
        lambda strides: bool(strides) and strides[0] > 0 and sorted(set(strides)) == strides,
        "a non-empty, strictly increasing list of positive ints",
    ),
    "model.tasks": _rule(
        _distinct_tasks,
        f"a non-empty list of distinct tasks from {list(TASKS)} ('inst' needs 'det')",
    ),
    "model.fpn_channels": _POSITIVE,
    "model.det.num_convs": _NON_NEGATIVE,
    "model.det.center_sampling_radius": _NON_NEGATIVE,
    "model.sem.channels": _POSITIVE,
    "model.inst.roi_size": _POSITIVE,
    "model.inst.channels": _POSITIVE,
    "model.inst.num_convs": _NON_NEGATIVE,
    "model.num_classes": _POSITIVE,
    "data.image_size": _rule(lambda value: value >= 32, "an int >= 32"),
    "data.scale_range": _rule(
        lambda scales: len(scales) == 2 and 0 < scales[0] <= scales[1],
        "two positive numbers [low, high] with low <= high",
    ),
    "data.hflip_prob": _PROBABILITY,
    "data.color_jitter": _NON_NEGATIVE,
    "data.batch_size": _POSITIVE,
    "data.num_workers": _NON_NEGATIVE,
    "train.epochs": _POSITIVE,
    "train.optimizer": _one_of(OPTIMIZERS),
    "train.lr": _rule(lambda value: value > 0, "a number > 0"),
    "train.weight_decay": _NON_NEGATIVE,
    "train.momentum": _PROBABILITY,
    "train.warmup_iters": _NON_NEGATIVE,
    "train.clip_grad_norm": _NON_NEGATIVE,
    "train.amp": _one_of(AMP_MODES),
    "train.eval_every": _POSITIVE,
    "train.device": _rule(
        lambda device: _DEVICE_PATTERN.fullmatch(device) is not None,
        "'auto', 'cpu', 'cuda' or 'cuda:N'",
    ),
    "train.log_every": _POSITIVE,
    "train.threads": _NON_NEGATIVE,
    "eval.score_thresh": _PROBABILITY,
    "eval.nms_thresh": _PROBABILITY,
    "eval.max_detections": _POSITIVE,
    "eval.batch_size": _POSITIVE,
    "mtl.method": _one_of(MTL_METHODS),
    "mtl.sharing": _one_of(MTL_SHARING),
    "mtl.grad_on": _one_of(GRAD_TARGETS),
    "mtl.dwa_temperature": _rule(lambda value: value > 0, "a number > 0"),
    "mtl.gradnorm_alpha": _NON_NEGATIVE,
    "mtl.gradnorm_lr": _rule(lambda value: value > 0, "a number > 0"),
    "mtl.cagrad_c": _NON_NEGATIVE,
    "mtl.log_every": _NON_NEGATIVE,
    "data.on_invalid": _one_of(ON_INVALID),
    "data.max_bad_image_fraction": _PROBABILITY,
    # Keys of list elements drop the index: data.extra_sources[1].tasks -> data.extra_sources[].tasks
    "data.extra_sources[].tasks": _rule(
        _distinct_tasks,
        f"a non-empty list of distinct tasks from {list(TASKS)} ('inst' needs 'det')",
    ),
    "data.extra_sources[].class_names": _DISTINCT_NAMES,
    "model.sem.class_names": _rule(
        lambda names: len(set(names)) == len(names) and all(names) and "background" not in names,
        "distinct, non-empty names other than 'background' (id 0 is background)",
    ),
    "data.val_sem_class_names": _DISTINCT_NAMES,
    "train.nan_policy": _one_of(NAN_POLICIES),
    "train.max_nan_skips": _NON_NEGATIVE,
    "train.checkpoint_every": _NON_NEGATIVE,
    "mtl.weights": _rule(
        lambda weights: set(weights) <= set(TASKS) and all(w >= 0 for w in weights.values()),
        f"task names from {list(TASKS)} mapped to weights >= 0",
    ),
}


def _check_consistency(cfg: Config, source: str) -> None:
    """Checks that involve more than one field."""
    model = cfg.model
    for name in ("class_names", "category_ids"):
        values = getattr(model, name)
        if values and model.num_classes is not None and len(values) != model.num_classes:
            raise ConfigError(
                f"{source}: model.{name}: has {len(values)} entries but model.num_classes is "
                f"{model.num_classes}"
            )
    if len(set(model.category_ids)) != len(model.category_ids):
        raise ConfigError(f"{source}: model.category_ids: duplicate ids in {model.category_ids}")
    for index, extra in enumerate(cfg.data.extra_sources):
        _check_source(extra, f"data.extra_sources[{index}]", source)
    data = cfg.data
    val_sem = [data.val_sem_images, data.val_sem_masks, data.val_sem_class_names]
    if any(val_sem) and not all(val_sem):
        raise ConfigError(
            f"{source}: data.val_sem_images, data.val_sem_masks and data.val_sem_class_names: "
            "a semantic PNG validation set needs all three (images, PNG class maps, class names)"
        )


def _check_source(extra: SourceConfig, path: str, source: str) -> None:
    """A source is either COCO (ann + images) or semantic PNG (images + sem_masks + class_names)."""
    if not extra.images:
        raise ConfigError(f"{source}: {path}.images: every source needs its image folder")
    if bool(extra.ann) == bool(extra.sem_masks):
        raise ConfigError(
            f"{source}: {path}: set exactly one of 'ann' (COCO JSON) or 'sem_masks' (PNG folder)"
        )
    if extra.sem_masks:
        if extra.tasks != ["sem"]:
            raise ConfigError(
                f"{source}: {path}.tasks: a semantic PNG source labels only sem; write tasks: [sem] "
                f"(got {extra.tasks})"
            )
        if not extra.class_names:
            raise ConfigError(
                f"{source}: {path}.class_names: a semantic PNG source needs the name of each "
                "class id 1..K"
            )
    elif extra.class_names:
        raise ConfigError(
            f"{source}: {path}.class_names: only for semantic PNG sources; a COCO source takes "
            "its names from the JSON categories"
        )
