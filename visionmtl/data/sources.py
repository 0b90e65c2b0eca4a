"""Training on several sources with partial labels: each source labels some tasks only.

The targets of tasks a source does not label are left out (an absent key means "not labelled", so
the heads give those images no loss); they are never filled with background.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from visionmtl.config import DataConfig, SourceConfig
from visionmtl.data.checks import CheckReport, Problem, check_coco, check_png_set
from visionmtl.data.coco import CocoDataset
from visionmtl.data.semantic_png import PNG_ID_OFFSET, SemanticPngDataset, declared_png_ids
from visionmtl.errors import DataError
from visionmtl.structures import BACKGROUND, IGNORE_INDEX, TARGET_KEYS, TASKS

# Extra source s (1, 2, ...) gets image ids s * SOURCE_ID_STRIDE + its own id, so ids stay unique.
SOURCE_ID_STRIDE: int = 10**9


class TaskFilter(Dataset):
    """A view of ``dataset`` whose targets keep only the keys of ``tasks`` (see ``TARGET_KEYS``).

    ``label_map`` (source label -> main label, contiguous 0-based) renames ``labels`` (``sem_seg``
    must already be in the semantic head's ids, see :func:`build_training_set`); ``id_offset`` is
    added to ``image_id``; ``repeat`` > 1 lists every image that many times (index ``i`` is image
    ``i % len(dataset)``). The wrapped data set needs ``image_ids`` and ``image_info(i)`` (a dict
    with ``file_name``). Picklable when ``dataset`` is.
    """

    def __init__(
        self,
        dataset: Any,
        tasks: Sequence[str],
        label_map: dict[int, int] | None = None,
        id_offset: int = 0,
        repeat: int = 1,
    ) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.repeat = repeat
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
        """The image id of every index (repeated images repeat their id)."""
        return [self.id_offset + int(image_id) for image_id in self.dataset.image_ids] * self.repeat

    def image_info(self, index: int) -> dict[str, Any]:
        """The wrapped ``image_info`` with the offset ``id``."""
        info = dict(self.dataset.image_info(index % len(self.dataset)))
        info["id"] = self.id_offset + int(info["id"])
        return info

    def __len__(self) -> int:
        return len(self.dataset) * self.repeat

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.dataset[index % len(self.dataset)]
        target = {key: value for key, value in target.items() if key not in self.dropped_keys}
        if self._label_lut is not None and "labels" in target:
            target["labels"] = self._label_lut[target["labels"]]
        if self.id_offset:
            target["image_id"] = target["image_id"] + self.id_offset
        return image, target


class MixedDataset(ConcatDataset):
    """The training sources (``train_ann``, then ``extra_sources``) in one index space.

    ``category_ids`` / ``class_names`` are the detection categories (empty for a model without
    ``det``); ``sem_background`` whether some source labels the semantic head's background.
    ``image_ids`` lists the image id of every index (unique across sources), :meth:`image_info`
    gives ``id`` / ``file_name`` / ``path`` and ``source`` (the annotation file or mask folder),
    :meth:`file_names` the id -> name dict for messages. ``coco_sets`` are the COCO data sets
    inside (for their check reports).
    """

    def __init__(
        self,
        parts: list[Any],
        source_names: list[str],
        categories: CocoDataset | None = None,
        sem_background: bool = True,
    ) -> None:
        super().__init__(parts)
        self.source_names = list(source_names)
        self.category_ids: list[int] = list(categories.category_ids) if categories else []
        self.class_names: list[str] = list(categories.class_names) if categories else []
        self.sem_background = sem_background
        self.image_ids: list[int] = [int(i) for part in self.datasets for i in part.image_ids]
        distinct = [set(part.image_ids) for part in self.datasets]
        if len(set().union(*distinct)) != sum(len(ids) for ids in distinct):
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
        inner = [part.dataset if isinstance(part, TaskFilter) else part for part in self.datasets]
        return [dataset for dataset in inner if isinstance(dataset, CocoDataset)]

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
    sem_names: Sequence[str],
    declared: Mapping[int, str | None],
    mask_dir: str,
    where: str,
    background: bool = True,
) -> dict[int, int]:
    """PNG id -> the semantic head's id (1..S, 0 background, 255 ignore), matching the names of
    ``declared`` (:func:`declared_png_ids`) to ``sem_names`` (the head's classes).

    A "background" id stays background only when the PNG labels every class of the head (and
    the head has a ``background`` class); otherwise it is ignored: the source cannot say whether
    such a pixel belongs to a class it does not label. DataError for a name the head does not
    segment (``where`` names that class list)."""
    head = _unique_labels(sem_names, where)
    labelled = {name for name in declared.values() if name not in (None, BACKGROUND)}
    mapping = {}
    for png_id, name in declared.items():
        if name is None:
            mapping[png_id] = IGNORE_INDEX
        elif name == BACKGROUND:
            keep = background and set(sem_names) <= labelled
            mapping[png_id] = 0 if keep else IGNORE_INDEX
        elif name in head:
            mapping[png_id] = head[name] + 1
        else:
            raise DataError(
                f"{mask_dir}: class id {png_id} ('{name}') is not a class of the semantic head "
                f"({where}: {', '.join(sem_names)}); fix the source's class names or ids, or "
                "list it in model.sem.class_names"
            )
    return mapping


def png_dataset(
    images: str,
    masks: str,
    sem_names: Sequence[str],
    where: str,
    *,
    class_names: Sequence[str] = (),
    ids: Mapping[int, str] | None = None,
    ignore_ids: Sequence[int] = (),
    background: bool = True,
    transform: Callable[..., dict[str, Tensor]] | None = None,
    id_offset: int = PNG_ID_OFFSET,
) -> SemanticPngDataset:
    """A PNG label set whose ids are declared as in :class:`SourceConfig` (``class_names`` or
    ``ids`` + ``ignore_ids``), read in the ids of the semantic head of ``sem_names``
    (``background``: whether that head has a background class; see :func:`png_label_map`)."""
    declared = declared_png_ids(class_names, ids, ignore_ids)
    label_map = png_label_map(sem_names, declared, masks, where, background)
    names = [name for name in declared.values() if name not in (None, BACKGROUND)]
    return SemanticPngDataset(
        images, masks, names, transform=transform, label_map=label_map, id_offset=id_offset
    )


def build_training_set(
    main: CocoDataset | None,
    sources: Sequence[SourceConfig],
    transform: Callable[..., dict[str, Tensor]] | None = None,
    on_invalid: str = "skip",
    max_bad_fraction: float = 0.01,
    sem_classes: Sequence[str] | None = None,
    cache_dir: Path | None = None,
) -> MixedDataset:
    """``main`` (``data.train_ann``, may be None) followed by one data set per ``sources`` entry,
    each labelling its own tasks.

    The detection categories are ``main``'s, else those of the first COCO source that labels
    ``det``; every COCO source that labels ``det`` is matched to them by category name. COCO
    sources (``ann``) are loaded with ``transform``/``on_invalid``/``max_bad_fraction``/
    ``cache_dir`` (see :class:`CocoDataset`), reading only their own tasks' targets; semantic PNG
    sources (``sem_masks``) map their declared ids to the semantic head's classes by name.
    ``sem_classes`` is ``model.sem.class_names`` (empty / None: the detection categories; ``main``
    must have been built with the same list). The head has a background class when some source
    labels it (``sem_background``). DataError (naming the file) when a name has no match.
    """
    policy = (transform, on_invalid, max_bad_fraction, cache_dir)
    categories, coco_parts = _read_coco_sources(main, sources, sem_classes, policy)
    sem_names = list(sem_classes or (categories.class_names if categories is not None else []))
    if sem_classes:
        where = "model.sem.class_names"
    else:
        where = f"the categories of {categories.ann_file}" if categories is not None else "-"
    parts: list[Any] = [] if main is None else [main]
    names: list[str] = [] if main is None else [str(main.ann_file)]
    background = [] if main is None else [main.labels_sem_background]
    for number, source in enumerate(sources, start=1):
        offset = number * SOURCE_ID_STRIDE
        coco = coco_parts.get(number - 1)
        if coco is None:
            png = png_dataset(
                source.images,
                source.sem_masks,
                sem_names,
                where,
                class_names=source.class_names,
                ids=source.ids,
                ignore_ids=source.ignore_ids,
                transform=transform,
                id_offset=offset,
            )
            parts.append(TaskFilter(png, source.tasks, repeat=source.repeat))
            names.append(source.sem_masks)
            background.append(png.labels_sem_background)
            continue
        # Labels must match the detection categories when the source labels boxes.
        label_map = coco_label_map(categories, coco) if "det" in source.tasks else None
        parts.append(
            TaskFilter(coco, source.tasks, label_map, id_offset=offset, repeat=source.repeat)
        )
        names.append(source.ann)
        if "sem" in source.tasks:
            background.append(coco.labels_sem_background)
    return MixedDataset(parts, names, categories, sem_background=any(background))


def _read_coco_sources(
    main: CocoDataset | None,
    sources: Sequence[SourceConfig],
    sem_classes: Sequence[str] | None,
    policy: tuple[Any, ...],
) -> tuple[CocoDataset | None, dict[int, CocoDataset]]:
    """(the set that defines the detection categories, the COCO sources by index). Without
    ``main`` the first COCO source that labels det defines them; it is read first, since without
    ``model.sem.class_names`` its categories are also the semantic classes the others are read
    in. DataError when a source labels sem and the semantic head would have no classes."""
    first = None
    if main is None:
        first = next((i for i, s in enumerate(sources) if s.ann and "det" in s.tasks), None)
    coco_parts: dict[int, CocoDataset] = {}
    if first is not None:
        coco_parts[first] = _coco_source(sources[first], sem_classes or None, *policy)
    categories = main if main is not None else coco_parts.get(first)
    sem_names = list(sem_classes or (categories.class_names if categories is not None else []))
    if not sem_names and any("sem" in source.tasks for source in sources):
        raise DataError(
            "the semantic head has no classes: no training source gives detection categories; "
            "list the classes in model.sem.class_names"
        )
    for index, source in enumerate(sources):
        if source.ann and index not in coco_parts:
            coco_parts[index] = _coco_source(source, sem_names, *policy)
    return categories, coco_parts


def _coco_source(
    source: SourceConfig,
    sem_names: Sequence[str] | None,
    transform: Callable[..., dict[str, Tensor]] | None,
    on_invalid: str,
    max_bad_fraction: float,
    cache_dir: Path | None,
) -> CocoDataset:
    """A COCO training source reading only its own tasks' targets; when it labels sem, its
    semantic ids are mapped by name to ``sem_names`` (None: its own categories)."""
    return CocoDataset(
        source.ann,
        source.images,
        transform=transform,
        on_invalid=on_invalid,
        max_bad_fraction=max_bad_fraction,
        sem_classes=sem_names if "sem" in source.tasks else None,
        tasks=source.tasks,
        cache_dir=cache_dir,
    )


def check_data_sources(data: DataConfig, check_images: bool = True) -> list[CheckReport]:
    """A check report for every data set ``data`` names: the COCO files (``train_ann``,
    ``val_ann``, COCO ``extra_sources``) and the PNG sets (PNG ``extra_sources``, ``val_sem_*``)
    with their declared ids. DataError when a file or folder is missing."""
    coco = [(data.train_ann, data.train_images), (data.val_ann, data.val_images)]
    coco += [(source.ann, source.images) for source in data.extra_sources if source.ann]
    png = [
        (s.images, s.sem_masks, declared_png_ids(s.class_names, s.ids, s.ignore_ids))
        for s in data.extra_sources
        if s.sem_masks
    ]
    if data.val_sem_masks:
        ids = declared_png_ids(data.val_sem_class_names, data.val_sem_ids, data.val_sem_ignore_ids)
        png.append((data.val_sem_images, data.val_sem_masks, ids))
    reports = [check_coco(ann, images, check_images) for ann, images in coco if ann]
    return reports + [check_png_set(*entry) for entry in png]
