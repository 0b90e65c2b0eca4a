"""Training on several sources with partial labels: each source labels some tasks only.

The targets of tasks a source does not label are left out (an absent key means "not labelled", so
the heads give those images no loss); they are never filled with background.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from visionmtl.config import SourceConfig
from visionmtl.data.checks import Problem
from visionmtl.data.coco import CocoDataset
from visionmtl.data.semantic_png import SemanticPngDataset
from visionmtl.errors import DataError
from visionmtl.structures import IGNORE_INDEX, TARGET_KEYS, TASKS

# Extra source s (1, 2, ...) gets image ids s * SOURCE_ID_STRIDE + its own id, so ids stay unique.
SOURCE_ID_STRIDE: int = 10**9


class TaskFilter(Dataset):
    """A view of ``dataset`` whose targets keep only the keys of ``tasks`` (see ``TARGET_KEYS``).

    ``label_map`` (source label -> main label, contiguous 0-based) renames ``labels`` (``sem_seg``
    must already be in the semantic head's ids, see :func:`build_training_set`); ``id_offset`` is
    added to
    ``image_id``. The wrapped data set needs ``image_ids`` and ``image_info(i)`` (a dict with
    ``file_name``). Picklable when ``dataset`` is.
    """

    def __init__(
        self,
        dataset: Any,
        tasks: Sequence[str],
        label_map: dict[int, int] | None = None,
        id_offset: int = 0,
    ) -> None:
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {tasks}")
        if "inst" in tasks and "det" not in tasks:
            raise ValueError("'inst' needs 'det': instance masks are learned inside the boxes")
        self.dataset = dataset
        self.tasks = list(tasks)
        self.dropped_keys = tuple(
            key for task in TASKS if task not in tasks for key in TARGET_KEYS[task]
        )
        self.id_offset = id_offset
        self.label_map = dict(label_map) if label_map is not None else None
        self._label_lut: Tensor | None = None
        if label_map is not None:
            self._label_lut = torch.full((max(label_map, default=-1) + 1,), -1, dtype=torch.int64)
            for source_label, main_label in label_map.items():
                self._label_lut[source_label] = main_label

    @property
    def image_ids(self) -> list[int]:
        return [self.id_offset + int(image_id) for image_id in self.dataset.image_ids]

    def image_info(self, index: int) -> dict[str, Any]:
        """The wrapped ``image_info`` with the offset ``id``."""
        info = dict(self.dataset.image_info(index))
        info["id"] = self.id_offset + int(info["id"])
        return info

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.dataset[index]
        target = {key: value for key, value in target.items() if key not in self.dropped_keys}
        if self._label_lut is not None and "labels" in target:
            target["labels"] = self._label_lut[target["labels"]]
        if self.id_offset:
            target["image_id"] = target["image_id"] + self.id_offset
        return image, target


class MixedDataset(ConcatDataset):
    """The main training set followed by the extra sources, one index space.

    Classes (``category_ids``, ``class_names``) are the main set's; ``image_ids`` lists the
    (unique) image id of every index, :meth:`image_info` gives ``id`` / ``file_name`` / ``path``
    and ``source`` (the annotation file or mask folder), :meth:`file_names` the id -> name dict
    for messages. ``coco_sets`` are the COCO data sets inside (for their check reports).
    """

    def __init__(self, main: CocoDataset, parts: list[Any], source_names: list[str]) -> None:
        super().__init__([main, *parts])
        self.main = main
        self.source_names = [str(main.ann_file), *source_names]
        self.category_ids: list[int] = list(main.category_ids)
        self.class_names: list[str] = list(main.class_names)
        self.image_ids: list[int] = [int(i) for part in self.datasets for i in part.image_ids]
        if len(set(self.image_ids)) != len(self.image_ids):
            raise DataError(
                f"{self.source_names}: image ids repeat across the training sources; keep JSON "
                f"image ids below {SOURCE_ID_STRIDE}"
            )

    def _locate(self, index: int) -> tuple[int, int]:
        """(part, index inside the part) of a global ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        for part, end in enumerate(self.cumulative_sizes):
            if index < end:
                start = self.cumulative_sizes[part - 1] if part else 0
                return part, index - start
        raise AssertionError("unreachable")

    def image_info(self, index: int) -> dict[str, Any]:
        """``{"id", "file_name", "path", "source", ...}`` of global image ``index``."""
        part, local = self._locate(index)
        info = dict(self.datasets[part].image_info(local))
        info["source"] = self.source_names[part]
        return info

    def file_names(self) -> dict[int, str]:
        """Image id -> file name, for every image of every source."""
        names: dict[int, str] = {}
        for part in self.datasets:
            for local, image_id in enumerate(part.image_ids):
                names[int(image_id)] = str(part.image_info(local)["file_name"])
        return names

    @property
    def coco_sets(self) -> list[CocoDataset]:
        sets = [self.main]
        for part in self.datasets[1:]:
            inner = part.dataset if isinstance(part, TaskFilter) else part
            if isinstance(inner, CocoDataset):
                sets.append(inner)
        return sets

    @property
    def problems(self) -> list[Problem]:
        """Problems found in (and actions taken on) every COCO source."""
        return [problem for dataset in self.coco_sets for problem in dataset.problems]


def _unique_labels(names: Sequence[str], where: str) -> dict[str, int]:
    """Class name -> contiguous label; names must be unique to match sources by name."""
    labels = {name: label for label, name in enumerate(names)}
    if len(labels) != len(names):
        raise DataError(
            f"{where}: class names repeat ({list(names)}); extra sources are matched by name, so "
            "names must be unique"
        )
    return labels


def coco_label_map(main: CocoDataset, source: CocoDataset) -> dict[int, int]:
    """Source label -> main label, matching categories by name; DataError naming the file for an
    unknown name."""
    main_labels = _unique_labels(main.class_names, str(main.ann_file))
    mapping = {}
    for label, (name, category_id) in enumerate(
        zip(source.class_names, source.category_ids, strict=True)
    ):
        if name not in main_labels:
            raise DataError(
                f"{source.ann_file}: category '{name}' (id {category_id}) is not a category of the "
                f"main training set {main.ann_file} ({', '.join(main.class_names)}); rename it "
                "to one of those, remove it, or leave 'det' and 'inst' out of this source's tasks"
            )
        mapping[label] = main_labels[name]
    return mapping


def png_label_map(
    sem_names: Sequence[str], class_names: Sequence[str], mask_dir: str, where: str
) -> dict[int, int]:
    """PNG class id (1..K) -> the semantic head's id (1..S), matching ``class_names`` by name.

    PNG 0 stays background only when the PNG labels every class of the head; otherwise it is
    ignored (255): the source cannot say whether such a pixel belongs to a class it does not
    label. DataError for a name the head does not segment (``where`` names that class list)."""
    head = _unique_labels(sem_names, where)
    mapping = {0: 0 if set(sem_names) <= set(class_names) else IGNORE_INDEX}
    for png_id, name in enumerate(class_names, start=1):
        if name not in head:
            raise DataError(
                f"{mask_dir}: class id {png_id} ('{name}') is not a class of the semantic head "
                f"({where}: {', '.join(sem_names)}); fix class_names, or list it in "
                "model.sem.class_names"
            )
        mapping[png_id] = head[name] + 1
    return mapping


def build_training_set(
    main: CocoDataset,
    sources: Sequence[SourceConfig],
    transform: Callable[..., dict[str, Tensor]] | None = None,
    on_invalid: str = "skip",
    max_bad_fraction: float = 0.01,
    sem_classes: Sequence[str] | None = None,
    cache_dir: Path | None = None,
) -> MixedDataset:
    """``main`` followed by one data set per ``sources`` entry, each labelling its own tasks.

    COCO sources (``ann``) are loaded with ``transform``/``on_invalid``/``max_bad_fraction``/
    ``cache_dir`` (see :class:`CocoDataset`), reading only their own tasks' targets, and
    their labels renamed to the main set's by category name (only for sources that label ``det``);
    semantic PNG sources (``sem_masks``) map ``class_names`` to the semantic head's classes by
    name. ``sem_classes`` is ``model.sem.class_names`` (empty / None: the main set's categories;
    ``main`` must have been built with the same list). DataError (naming the file) when a name
    has no match.
    """
    sem_names = list(sem_classes) if sem_classes else list(main.class_names)
    where = "model.sem.class_names" if sem_classes else f"the categories of {main.ann_file}"
    parts: list[Any] = []
    names: list[str] = []
    for number, source in enumerate(sources, start=1):
        offset = number * SOURCE_ID_STRIDE
        if source.sem_masks:
            label_map = png_label_map(sem_names, source.class_names, source.sem_masks, where)
            png = SemanticPngDataset(
                source.images,
                source.sem_masks,
                source.class_names,
                transform=transform,
                label_map=label_map,
                id_offset=offset,
            )
            parts.append(TaskFilter(png, source.tasks))
            names.append(source.sem_masks)
        else:
            # Semantic ids are mapped by name to the head's classes, with the background rule
            # of coco_sem_table (only for sources that label sem: no table, no class limit).
            coco = CocoDataset(
                source.ann,
                source.images,
                transform=transform,
                on_invalid=on_invalid,
                max_bad_fraction=max_bad_fraction,
                sem_classes=sem_names if "sem" in source.tasks else None,
                tasks=source.tasks,
                cache_dir=cache_dir,
            )
            # Labels must match the main categories when the source labels boxes.
            label_map = coco_label_map(main, coco) if "det" in source.tasks else None
            parts.append(TaskFilter(coco, source.tasks, label_map=label_map, id_offset=offset))
            names.append(source.ann)
    background = [main.labels_sem_background]
    for source, part in zip(sources, parts, strict=True):
        if "sem" in source.tasks:
            inner = part.dataset
            labelled = inner.label_map[0] == 0 if source.sem_masks else inner.labels_sem_background
            background.append(labelled)
    if not any(background):
        warnings.warn(
            f"no training source labels background for the semantic head ({where}: "
            f"{', '.join(sem_names)}): none labels all of these classes, so 0 is never a target "
            "and every pixel will be given one of the classes; add a source that labels them all",
            stacklevel=2,
        )
    return MixedDataset(main, parts, names)
