"""Names and small types every layer shares: tasks, target keys, the ignore id, the class lists.

This module imports nothing heavy, so the config, data, models, engine, evaluation and API layers
all take these from here instead of spelling them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from visionmtl.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

# The tasks a model can learn, in the order they are reported (config ``model.tasks``).
TASKS: tuple[str, ...] = ("det", "sem", "inst")
# Target keys that carry each task's labels: a task none of whose keys is present is "not labelled
# here". inst: the training loader's mask crops with their regions, or full-image masks.
TARGET_KEYS: dict[str, tuple[str, ...]] = {
    "det": ("boxes", "labels"),
    "sem": ("sem_seg",),
    "inst": ("mask_crops", "mask_regions", "masks"),
}
# Semantic label id that no loss and no metric counts (crowd regions, void, unlabelled classes).
IGNORE_INDEX: int = 255
BACKGROUND: str = "background"  # the name of semantic id 0: none of the head's classes
# Side of the square each instance's mask is drawn onto for the mask head's targets (its box plus
# one cell each side, see visionmtl.data.rasterize): the targets (2 * model.inst.roi_size cells) are
# resampled from its 62 cells over the box, so roi_size is at most 31 (a config rule).
MASK_CROP_SIZE: int = 64
# Semantic ids are 0 (background), 1..S (classes) and 255 (ignore), so S is at most 254.
MAX_SEM_CLASSES: int = IGNORE_INDEX - 1


class Target(TypedDict, total=False):
    """One image's labels (a missing key: that task is not labelled for this image).

    boxes ``[N, 4]`` float xyxy pixels of the resized image; labels ``[N]`` int64, contiguous
    0-based over the data set's categories; masks ``[N, H, W]`` uint8, or (what ``CocoDataset``
    with a ``Transform`` gives) mask_crops ``[N, S, S]`` uint8 each covering mask_regions
    ``[N, 4]`` float32 xyxy pixels (the instance's box with a margin, see
    :mod:`visionmtl.data.rasterize`); sem_seg ``[H, W]`` int64 (uint8
    from the training loader's compact transform) with 0 = background, k + 1 = semantic class k,
    255 = ignore; image_id int; image_size and
    orig_size ``[2]`` int64 (h, w) of the resized (unpadded) and the original image."""

    boxes: Tensor
    labels: Tensor
    masks: Tensor
    mask_crops: Tensor
    mask_regions: Tensor
    sem_seg: Tensor
    image_id: int
    image_size: Tensor
    orig_size: Tensor


class Prediction(TypedDict, total=False):
    """One image's predictions, in the (unpadded) input image's pixels.

    boxes ``[N, 4]`` xyxy; scores ``[N]``; labels ``[N]`` contiguous 0-based; masks ``[N, H, W]``
    bool; sem_seg ``[H, W]`` int64 semantic ids as in :class:`Target`. ``postprocess(...,
    mask_crops=True)`` (the Predictor) gives ``mask_crops`` (N bool crops) and ``mask_regions``
    ``[N, 4]`` instead of ``masks``."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    masks: Tensor
    sem_seg: Tensor


def task_of(loss_name: str) -> str:
    """``"det/cls"`` -> ``"det"``: loss names start with their task."""
    return loss_name.split("/", 1)[0]


def group_by_task(losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Sum each task's named losses: {"det/cls": a, "det/box": b, "sem/ce": c} -> {"det": a+b, "sem": c}."""
    grouped: dict[str, Tensor] = {}
    for name, value in losses.items():
        task = task_of(name)
        grouped[task] = grouped[task] + value if task in grouped else value
    return grouped


def labelled_tasks(targets: Sequence[Mapping[str, Any]]) -> set[str]:
    """The tasks that at least one of ``targets`` labels (see :data:`TARGET_KEYS`)."""
    return {
        task for task, keys in TARGET_KEYS.items() if any(key in t for t in targets for key in keys)
    }


def labels_instances(target: Mapping[str, Any]) -> bool:
    """Whether ``target`` labels instance masks (see :data:`TARGET_KEYS`)."""
    return any(key in target for key in TARGET_KEYS["inst"])


def check_sem_class_count(sem_names: Sequence[str]) -> None:
    """ConfigError when the semantic head would have more classes than its ids can hold."""
    if len(sem_names) > MAX_SEM_CLASSES:
        raise ConfigError(
            f"the semantic head would have {len(sem_names)} classes (model.sem.class_names, or "
            f"the training categories); at most {MAX_SEM_CLASSES} fit, id {IGNORE_INDEX} is "
            "ignore: list fewer in model.sem.class_names or leave 'sem' out of model.tasks"
        )


def semantic_classes(own_names: Sequence[str], category_names: Sequence[str]) -> list[str]:
    """The semantic head's classes without background: its own list, else the detection classes."""
    return list(own_names) or list(category_names)


@dataclass(frozen=True)
class ClassSpec:
    """The classes of a model, derived from its training data and stored in its checkpoint.

    Attributes:
        class_names: detection / mask classes; contiguous label k is ``class_names[k]``.
        category_ids: the data set's JSON id of label k.
        sem_names: the semantic head's classes without background (id k + 1 = ``sem_names[k]``):
            ``model.sem.class_names`` when set, else ``class_names``.
        sem_background: whether the semantic head predicts background (id 0): some training
            source labels it. Without it (e.g. CamVid: every pixel is sky, road, ...) id 0 is
            never predicted nor scored.
    """

    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    sem_names: tuple[str, ...]
    sem_background: bool = True

    @classmethod
    def from_data(
        cls,
        class_names: Sequence[str],
        category_ids: Sequence[int],
        own_sem_names: Sequence[str] = (),
        sem_background: bool = True,
    ) -> ClassSpec:
        """The spec of a data set's categories (none for a semantic-only model) and the semantic
        head's own list (may be empty when there are categories)."""
        if len(class_names) != len(category_ids) or not (class_names or own_sem_names):
            raise ConfigError(
                f"{len(class_names)} class names for {len(category_ids)} category ids; a model "
                "needs at least one category, each with a name (or model.sem.class_names)"
            )
        if len(set(category_ids)) != len(category_ids):
            raise ConfigError(f"duplicate category ids in {list(category_ids)}")
        sem_names = semantic_classes(own_sem_names, class_names)
        ids = tuple(int(i) for i in category_ids)
        return cls(tuple(class_names), ids, tuple(sem_names), bool(sem_background))

    @classmethod
    def numbered(cls, num_classes: int, own_sem_names: Sequence[str] = ()) -> ClassSpec:
        """``num_classes`` classes named "class1".. with ids 1.. (tests, export without data)."""
        names = [f"class{i}" for i in range(1, num_classes + 1)]
        return cls.from_data(names, list(range(1, num_classes + 1)), own_sem_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_own_sem_classes(self) -> bool:
        """Whether the semantic head has its own class list (not the detection classes)."""
        return self.sem_names != self.class_names

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and a bool for a checkpoint (``torch.load(weights_only=True)`` reads them)."""
        return {
            key: value if isinstance(value, bool) else list(value)
            for key, value in asdict(self).items()
        }

    @property
    def sem_ids(self) -> dict[int, str]:
        """Semantic id -> class name of what the head predicts (0: "background" when it has one)."""
        names = dict(enumerate(self.sem_names, start=1))
        return {0: BACKGROUND, **names} if self.sem_background else names

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassSpec:
        return cls(
            tuple(data["class_names"]),
            tuple(int(i) for i in data["category_ids"]),
            tuple(data["sem_names"]),
            bool(data.get("sem_background", True)),  # checkpoints before it: always background
        )
