"""COCO-format detection + instance + semantic segmentation dataset."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import box_convert, clip_boxes_to_image

from visionmtl.data.checks import CheckReport, Problem
from visionmtl.data.classes import coco_sem_table
from visionmtl.data.coco_index import build_index
from visionmtl.data.rasterize import Segment, Shapes, paint_semantic
from visionmtl.data.records import cache_key, cached
from visionmtl.data.transforms import Transform
from visionmtl.errors import DataError
from visionmtl.structures import semantic_classes


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation (polygons, uncompressed or compressed RLE) to a uint8 ``[H, W]`` mask."""
    return Segment(segmentation, height, width).full()


def _boxes_in_image(bboxes: list[Any], height: int, width: int) -> tuple[np.ndarray, list[int]]:
    """COCO ``[x, y, w, h]`` boxes -> float32 ``[K, 4]`` xyxy clipped to the ``height`` x ``width``
    image, without those that clipping leaves empty (outside the image); and the kept indices."""
    xywh = torch.tensor([[float(v) for v in bbox] for bbox in bboxes], dtype=torch.float64)
    xyxy = clip_boxes_to_image(box_convert(xywh.reshape(-1, 4), "xywh", "xyxy"), (height, width))
    keep = (xyxy[:, 2] - xyxy[:, 0] > 0) & (xyxy[:, 3] - xyxy[:, 1] > 0)
    return xyxy[keep].numpy().astype(np.float32), keep.nonzero().flatten().tolist()


def is_box_target(annotation: dict[str, Any]) -> bool:
    """Whether an annotation is an object at all: its box has a positive width and height (a
    zero-size box, kept by ``on_invalid: error`` as a warning, is neither trained nor scored)."""
    return annotation["bbox"][2] > 0 and annotation["bbox"][3] > 0


class CocoDataset(Dataset):
    """A COCO-format data set: ``dataset[i] -> (image [3, h, w], target dict)``.

    Target keys (see the project contract): ``boxes`` float32 ``[N, 4]`` xyxy, ``labels`` int64
    ``[N]`` contiguous over the categories sorted by JSON id, ``mask_crops`` uint8 ``[N, S, S]``
    (S = ``MASK_CROP_SIZE``) each covering ``mask_regions`` float32 ``[N, 4]`` xyxy (the
    instance's box plus one cell per side; drawn there, never at full size, see
    :mod:`~visionmtl.data.rasterize`), ``sem_seg`` int64 ``[h, w]`` (uint8, and a uint8 image,
    from a ``compact`` transform; 0 background, k + 1 category k, 255 crowd; with ``sem_classes``
    k + 1 is ``sem_classes[k]``, see :func:`~visionmtl.data.classes.coco_sem_table`), ``image_id``
    int64 scalar, ``orig_size`` and ``image_size`` int64 ``[2]`` (h, w). Crowd annotations are not
    in boxes/labels/masks; their region is 255 in ``sem_seg``. The mask keys and ``sem_seg`` are
    absent for an image where some annotation has no segmentation (those tasks are not labelled
    there). A ``transform`` that is not a :class:`~visionmtl.data.transforms.Transform` gets
    and returns full-size ``masks`` uint8 ``[N, h, w]`` instead of the crops;
    :meth:`original_instances` gives full-size masks for evaluation.

    ``on_invalid`` ("error" | "skip" | "fix") is applied to the problems that
    :func:`~visionmtl.data.checks.check_coco_data` finds in the JSON (see
    :func:`~visionmtl.data.checks.clean_annotations`); ``report`` holds them and ``problems`` the
    same with the action taken, plus images that later failed to load. Image files are only
    checked when loaded: with ``skip_corrupt`` (default: on unless ``on_invalid`` is "error") a
    broken one is skipped, see :meth:`__getitem__`.

    ``tasks``: the tasks the targets are read for (None: all); without inst and sem the
    segmentations are not decoded and targets have no mask keys and no ``sem_seg``. ``cache_dir``: where
    the checked, cleaned annotations are cached, keyed by the file's path and contents and the
    settings (None: no cache; see :func:`~visionmtl.data.records.cached`). The records
    are kept packed (:class:`~visionmtl.data.records.PackedRecords`), so DataLoader workers share
    them without copying.

    ``transform``: a :class:`~visionmtl.data.transforms.Transform` (called with ``shapes=``), or any
    callable ``transform(image, boxes=, labels=, masks=, sem_seg=)`` returning a dict like it; by
    default images keep their size and are only normalised.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        transform: Callable[..., dict[str, Tensor]] | None = None,
        on_invalid: str = "error",
        max_bad_fraction: float = 0.01,
        skip_corrupt: bool | None = None,
        sem_classes: Sequence[str] | None = None,
        tasks: Collection[str] | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.transform = transform if transform is not None else Transform(None, train=False)
        self.on_invalid = on_invalid
        self.max_bad_fraction = max_bad_fraction
        self.skip_corrupt = on_invalid != "error" if skip_corrupt is None else skip_corrupt
        # Only inst and sem need the segmentations decoded (None: every task).
        self.decode_masks = tasks is None or bool({"inst", "sem"} & set(tasks))
        # JSON-only checks here; image files are checked lazily, when __getitem__ loads them.
        build = partial(build_index, self.ann_file, self.image_dir, on_invalid, is_box_target)
        if cache_dir is None:
            index = build()
        else:
            key = cache_key(self.ann_file, on_invalid, str(self.image_dir))
            index = cached(Path(cache_dir) / f"coco-{key}.pkl", build)
        self.report: CheckReport = index.report
        self.problems: list[Problem] = list(index.problems)
        self.num_file_annotations = self.report.num_annotations
        self._index = index
        self.category_ids: list[int] = [int(c["id"]) for c in index.categories]
        self.class_names: list[str] = [str(c.get("name", "")) for c in index.categories]
        # The semantic head's classes (``model.sem.class_names``) when they are its own list.
        self.sem_classes: list[str] | None = list(sem_classes) if sem_classes else None
        self._sem_table = (
            coco_sem_table(self.class_names, self.sem_classes) if self.sem_classes else None
        )
        self.cat_id_to_label: dict[int, int] = {
            category_id: label for label, category_id in enumerate(self.category_ids)
        }
        # Indices whose image failed to load, in this process only: each DataLoader worker holds
        # its own copy, so the max_bad_fraction limit is applied per worker.
        self.failed_indices: set[int] = set()

    @property
    def image_ids(self) -> list[int]:
        """JSON id of every index (a new list: index with :meth:`image_info` in loops)."""
        return self._index.image_ids.tolist()

    def _fail(self, where: str, problem: str, hint: str) -> DataError:
        return DataError(f"{self.ann_file}: {where}: {problem}; {hint}")

    # ----------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._index.images)

    def image_info(self, index: int) -> dict[str, Any]:
        """``{"id", "file_name", "path", "height", "width"}`` of image ``index`` (from the JSON)."""
        image = self._index.images[index]
        return {
            "id": int(image["id"]),
            "file_name": str(image["file_name"]),
            "path": self.image_dir / str(image["file_name"]),
            "height": int(image["height"]),
            "width": int(image["width"]),
        }

    def annotations(self, index: int) -> list[dict[str, Any]]:
        """The cleaned COCO annotations of image ``index`` in file order (a new copy)."""
        return self._index.annotations[index]

    def load_image(self, index: int) -> np.ndarray:
        """Read image ``index`` as RGB uint8 ``[H, W, 3]`` (EXIF orientation applied).

        If the EXIF-rotated size disagrees with the JSON but the stored one matches, the stored
        orientation is used (the annotations were made on it).
        """
        info = self.image_info(index)
        path: Path = info["path"]
        where = f"image {info['id']}"
        try:
            with Image.open(path) as opened:
                opened.load()
                stored = opened.convert("RGB")
                rotated = ImageOps.exif_transpose(opened).convert("RGB")
        except FileNotFoundError:
            raise DataError(
                f"{path}: {where} file not found; check image_dir ({self.image_dir}) and "
                f"file_name in {self.ann_file}"
            ) from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise DataError(
                f"{path}: {where} cannot be decoded ({error}); the file is broken or truncated, "
                "replace it or remove the image from the annotations"
            ) from None
        expected = (info["width"], info["height"])
        if rotated.size == expected:
            return np.array(rotated, dtype=np.uint8)
        if stored.size == expected:
            return np.array(stored, dtype=np.uint8)
        raise DataError(
            f"{path}: {where} is {rotated.size[0]}x{rotated.size[1]} (w x h) but {self.ann_file} "
            f"says {expected[0]}x{expected[1]}; fix width/height in the JSON or the image"
        )

    def _parts(
        self, index: int, height: int, width: int, decode: bool
    ) -> tuple[np.ndarray, np.ndarray, Shapes | None]:
        """Boxes ``[N, 4]`` (original pixels, clipped), labels ``[N]`` and the
        :class:`~visionmtl.data.rasterize.Shapes` of those instances and of the crowd regions;
        None without ``decode`` or when some annotation has no segmentation (the image is not
        labelled for inst and sem)."""
        annotations = [a for a in self.annotations(index) if is_box_target(a)]
        labelled = decode and all(a.get("segmentation") for a in annotations)
        objects = [a for a in annotations if not a.get("iscrowd", 0)]
        box_array, kept = _boxes_in_image([a["bbox"] for a in objects], height, width)
        objects = [objects[i] for i in kept]
        labels = np.asarray([self.cat_id_to_label[a["category_id"]] for a in objects], np.int64)
        if not labelled:
            return box_array, labels, None
        crowd = [a for a in annotations if a.get("iscrowd", 0)]
        values, background = self._sem_values(labels)
        shapes = Shapes(
            height,
            width,
            [self._segment(index, a, height, width) for a in objects],
            values,
            [self._segment(index, a, height, width) for a in crowd],
            background,
        )
        return box_array, labels, shapes

    def _segment(self, index: int, annotation: dict[str, Any], height: int, width: int) -> Segment:
        try:
            return Segment(annotation["segmentation"], height, width)
        except (ValueError, TypeError, KeyError) as error:
            raise self._fail(
                f"annotation {annotation['id']} (image {int(self._index.image_ids[index])})",
                f"segmentation cannot be decoded ({error})",
                "use polygons or RLE with the image's height and width",
            ) from None

    def _sem_values(self, labels: np.ndarray) -> tuple[np.ndarray, int]:
        """The semantic id each instance of ``labels`` paints, and the background's."""
        if self._sem_table is None:
            return labels + 1, 0
        return self._sem_table[labels + 1], int(self._sem_table[0])

    def _instances(
        self, index: int, height: int, width: int, decode: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Boxes ``[N, 4]``, labels ``[N]``, masks ``[N, H, W]`` and sem_seg ``[H, W]`` at original
        size; masks and sem_seg None without ``decode`` or when some annotation has no segmentation."""
        boxes, labels, shapes = self._parts(index, height, width, decode)
        if shapes is None:
            return boxes, labels, None, None
        masks = [segment.full() for segment in shapes.segments]
        mask_array = np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)
        whole = (0, 0, width, height)
        sem_seg = paint_semantic(
            np.full((height, width), shapes.background, np.int64),
            [(whole, mask, int(value)) for mask, value in zip(masks, shapes.values, strict=True)],
            [(whole, segment.full()) for segment in shapes.crowd],
        )
        return boxes, labels, mask_array, sem_seg

    def original_instances(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Boxes ``[N, 4]`` float32 xyxy, labels ``[N]`` (contiguous; ``category_ids[label]`` is
        the JSON id) and masks ``[N, H, W]`` uint8 (None when an annotation has no
        segmentation) of image ``index`` at its original size, crowd regions left out."""
        info = self.image_info(index)
        boxes, labels, masks, _ = self._instances(index, info["height"], info["width"], True)
        return boxes, labels, masks

    def ground_truth(self) -> dict[str, Any]:
        """The COCO data evaluation scores against: the cleaned data this set trains on (after
        ``on_invalid``), without zero-size boxes; a new copy (pycocotools writes into it)."""
        return self._index.coco_data(is_box_target)

    def annotation_changes(self) -> dict[str, int]:
        """How many annotations of the file are not scored as written: ``dropped`` (by the
        ``on_invalid`` policy, with their image, or zero-size boxes) and ``fixed`` (repaired)."""
        fixed = {
            p.index
            for p in self.problems
            if p.entity == "annotation" and p.action.startswith("fixed")
        }
        dropped = self.num_file_annotations - self._index.num_scored
        return {"dropped": dropped, "fixed": len(fixed)}

    @property
    def labels_sem_background(self) -> bool:
        """Whether this set's 0 pixels are background for the semantic head (else ignored)."""
        return self._sem_table is None or int(self._sem_table[0]) == 0

    @property
    def sem_class_names(self) -> list[str]:
        """Classes of ``sem_seg`` ids 1..S: ``sem_classes`` if given, else the categories."""
        return semantic_classes(self.sem_classes or (), self.class_names)

    def original_sem_seg(self, index: int) -> np.ndarray | None:
        """The semantic map ``[H, W]`` int64 at the original image size (for evaluation), or None
        if the image's annotations carry no segmentation."""
        info = self.image_info(index)
        return self._instances(index, info["height"], info["width"], decode=True)[3]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Image float32 ``[3, h, w]`` (normalised) and its target dict (see class docstring).

        With ``skip_corrupt``, an image that fails to load is skipped with a warning naming the
        file and the next loadable index is returned instead; DataError once more than
        ``max_bad_fraction`` of the images (counted in this process) have failed.
        """
        if not self.skip_corrupt:
            return self._item(index, self.load_image(index))
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self.failed_indices:
                continue
            try:
                image = self.load_image(candidate)
            except DataError as error:
                self._record_failure(candidate, error)
                continue
            return self._item(candidate, image)
        raise DataError(f"{self.ann_file}: no image of {self.image_dir} could be loaded")

    def _record_failure(self, index: int, error: DataError) -> None:
        """Remember a failed load, warn once for its file and stop when too many have failed."""
        self.failed_indices.add(index)
        info = self.image_info(index)
        failed, total = len(self.failed_indices), len(self)
        self.problems.append(
            Problem(
                "error",
                "image-load-failed",
                str(error),
                image_id=info["id"],
                file_name=info["file_name"],
                entity="image",
                action="skipped",
                fix_hint="replace the file or remove the image (`visionmtl check` lists all)",
            )
        )
        if failed > self.max_bad_fraction * total:
            raise DataError(
                f"{self.ann_file}: more than {self.max_bad_fraction:.1%} of images failed to load "
                f"({failed} of {total} in this process), last: {error}; fix the files "
                "(`visionmtl check` lists them) or raise data.max_bad_image_fraction"
            )
        warnings.warn(f"{error} (skipped: {failed} of {total} images failed)", stacklevel=3)

    def _item(self, index: int, image: np.ndarray) -> tuple[Tensor, dict[str, Tensor]]:
        """Target and transform for image ``index``, already loaded as ``[H, W, 3]`` uint8.

        With a :class:`~visionmtl.data.transforms.Transform`, the segmentations are drawn after
        the image is resized, straight at the size needed (``mask_crops`` and ``sem_seg``); another
        transform gets full-size ``masks`` and ``sem_seg``."""
        height, width = image.shape[:2]
        if isinstance(self.transform, Transform):
            boxes, labels, shapes = self._parts(index, height, width, self.decode_masks)
            output = self.transform(image, boxes=boxes, labels=labels, shapes=shapes)
        else:
            boxes, labels, masks, sem_seg = self._instances(index, height, width, self.decode_masks)
            output = self.transform(image, boxes=boxes, labels=labels, masks=masks, sem_seg=sem_seg)
        image_tensor = output["image"]
        target: dict[str, Tensor] = {
            key: output[key]
            for key in ("boxes", "labels", "masks", "mask_crops", "mask_regions", "sem_seg")
            if key in output
        }
        target["image_id"] = torch.tensor(int(self._index.image_ids[index]), dtype=torch.int64)
        target["orig_size"] = torch.tensor([height, width], dtype=torch.int64)
        target["image_size"] = torch.tensor(list(image_tensor.shape[-2:]), dtype=torch.int64)
        return image_tensor, target
