"""A semantic-segmentation-only data set: images with one PNG class map each (same file stem)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from visionmtl.data.transforms import Transform
from visionmtl.errors import DataError
from visionmtl.structures import BACKGROUND, IGNORE_INDEX

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
)
PNG_ID_OFFSET: int = 10**9  # synthetic image ids start here, away from COCO JSON ids

# PIL modes that hold one class id per pixel (P: palette indices, read as indices, not colours).
_CLASS_MAP_MODES: frozenset[str] = frozenset({"L", "P", "I", "I;16"})


def declared_png_ids(
    class_names: Sequence[str] = (),
    ids: Mapping[int, str] | None = None,
    ignore_ids: Sequence[int] = (),
) -> dict[int, str | None]:
    """PNG id -> class name (None: ignored) of a PNG label set.

    ``ids`` as given (e.g. CamVid's ``{0: "sky", ..., 10: "bicyclist"}``), else the default
    convention: 0 background, k = ``class_names[k - 1]``. 255 (unless ``ids`` names it) and
    ``ignore_ids`` are ignored."""
    if ids:
        declared: dict[int, str | None] = {int(k): str(v) for k, v in ids.items()}
    else:
        declared = {0: BACKGROUND, **dict(enumerate(class_names, start=1))}
    declared.setdefault(IGNORE_INDEX, None)
    declared.update(dict.fromkeys((int(i) for i in ignore_ids), None))
    return declared


def _id_ranges(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> "0..2, 5"."""
    parts: list[tuple[int, int]] = []
    for value in sorted(ids):
        if parts and parts[-1][1] == value - 1:
            parts[-1] = (parts[-1][0], value)
        else:
            parts.append((value, value))
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in parts) or "none"


def read_class_ids(path: str | Path) -> np.ndarray:
    """The class ids ``[H, W]`` of a single-channel PNG (palette PNGs: the indices, not colours);
    DataError naming the file when it cannot be decoded, has colour channels or ids > 255."""
    try:
        with Image.open(path) as opened:
            if opened.mode not in _CLASS_MAP_MODES:
                raise DataError(
                    f"{path}: expected a single-channel PNG of class ids (mode L or P), "
                    f"got mode {opened.mode}"
                )
            ids = np.array(opened)
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: semantic mask cannot be decoded ({error})") from None
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        bad = int(ids.max() if ids.max() > 255 else ids.min())
        raise DataError(f"{path}: class id {bad} is outside 0..255")
    return ids


def png_pairs(image_dir: Path, mask_dir: Path) -> tuple[list[Path], list[Path]]:
    """Every image of ``image_dir`` (sorted) and its class map ``mask_dir / (stem + ".png")``
    (which may not exist); DataError when the folder has no images."""
    images = sorted(
        path
        for path in image_dir.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )
    if not images:
        raise DataError(f"{image_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images, [mask_dir / f"{path.stem}.png" for path in images]


class SemanticPngDataset(Dataset):
    """``dataset[i] -> (image [3, h, w], target)`` where the target has only ``sem_seg``.

    Every image in ``image_dir`` is paired with ``mask_dir / (stem + ".png")``, a single-channel
    map of PNG class ids. ``label_map`` maps every id the PNGs may hold to the data contract's
    ids (0 background, c + 1 semantic class c, 255 ignore); without it the PNG ids are the
    contract's (0 background, k = ``class_names[k - 1]``, 255 ignore). An id the map does not
    declare is a DataError naming the file, the id and its pixel count, or ignore (255) with
    ``ignore_unknown``. The target holds ``sem_seg`` int64 ``[h, w]`` (uint8 with a ``compact``
    transform), ``image_id``
    (``id_offset + index``), ``orig_size`` and ``image_size``; it has no ``boxes``, ``labels`` or
    ``masks``, so detection and instance losses skip these images. Picklable (``spawn`` workers).
    """

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path,
        class_names: list[str],
        transform: Callable[..., dict[str, Tensor]] | None = None,
        label_map: dict[int, int] | None = None,
        ignore_unknown: bool = False,
        id_offset: int = PNG_ID_OFFSET,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.mask_dir = Path(mask_dir)
        self.class_names = list(class_names)
        self.transform = transform if transform is not None else Transform(None, train=False)
        self.ignore_unknown = ignore_unknown
        self.id_offset = id_offset
        if label_map is None:
            label_map = {k: k for k in range(len(self.class_names) + 1)}
            label_map[IGNORE_INDEX] = IGNORE_INDEX
        self.label_map = dict(label_map)
        for source_id, target_id in self.label_map.items():
            if not (0 <= source_id <= 255 and 0 <= target_id <= 255):
                raise ValueError(
                    f"label_map entries must lie in 0..255, got {source_id} -> {target_id}"
                )
        # Lookup table over PNG ids; -1 marks ids that are not declared.
        self._lut = np.full(256, -1, np.int64)
        for source_id, target_id in self.label_map.items():
            self._lut[source_id] = target_id
        self.image_paths, self.mask_paths = self._pair_files()
        self.image_ids: list[int] = [id_offset + i for i in range(len(self.image_paths))]

    @property
    def labels_sem_background(self) -> bool:
        """Whether some PNG id is the semantic head's background (0)."""
        return 0 in self.label_map.values()

    def _declared(self) -> str:
        """The declared PNG ids, for error messages."""
        scored = [k for k, v in self.label_map.items() if v != IGNORE_INDEX]
        ignored = [k for k, v in self.label_map.items() if v == IGNORE_INDEX]
        return f"classes {_id_ranges(scored)}, ignored {_id_ranges(ignored)}"

    def _pair_files(self) -> tuple[list[Path], list[Path]]:
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder not found")
        if not self.mask_dir.is_dir():
            raise DataError(f"{self.mask_dir}: semantic mask folder not found")
        images, masks = png_pairs(self.image_dir, self.mask_dir)
        for image, mask in zip(images, masks, strict=True):
            if not mask.is_file():
                raise DataError(
                    f"{mask}: semantic mask of image {image} not found; every image in "
                    f"{self.image_dir} needs a PNG class map with the same stem in {self.mask_dir}"
                )
        return images, masks

    def __len__(self) -> int:
        return len(self.image_paths)

    def image_info(self, index: int) -> dict[str, Any]:
        """``{"id", "file_name", "path", "mask_path"}`` of image ``index``."""
        return {
            "id": self.image_ids[index],
            "file_name": self.image_paths[index].name,
            "path": self.image_paths[index],
            "mask_path": self.mask_paths[index],
        }

    def load_class_map(self, index: int) -> np.ndarray:
        """The PNG class map ``[H, W]`` of image ``index`` in the contract's ids (int64)."""
        path = self.mask_paths[index]
        ids = read_class_ids(path)
        present = np.unique(ids)
        mapped = self._lut[ids.astype(np.int64)]
        unknown = present[self._lut[present.astype(np.int64)] < 0]
        if unknown.size:
            if not self.ignore_unknown:
                counts = ", ".join(
                    f"id {int(u)} ({int((ids == u).sum())} pixels)" for u in unknown[:5]
                )
                raise DataError(
                    f"{path}: class ids the id map does not declare: {counts}; declared: "
                    f"{self._declared()} (declare them in ids / ignore_ids, or fix the mask)"
                )
            mapped[mapped < 0] = IGNORE_INDEX
        return mapped

    def original_sem_seg(self, index: int) -> np.ndarray:
        """The semantic map ``[H, W]`` int64 at the original size (same as :meth:`load_class_map`)."""
        return self.load_class_map(index)

    def load_image(self, index: int) -> np.ndarray:
        """Image ``index`` as RGB uint8 ``[H, W, 3]``, in the orientation its class map has."""
        return self._aligned_image(index, read_class_ids(self.mask_paths[index]).shape)

    def _aligned_image(self, index: int, mask_shape: tuple[int, int]) -> np.ndarray:
        path = self.image_paths[index]
        try:
            with Image.open(path) as opened:
                opened.load()
                candidates = [ImageOps.exif_transpose(opened).convert("RGB"), opened.convert("RGB")]
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise DataError(f"{path}: image cannot be decoded ({error})") from None
        height, width = mask_shape
        for candidate in candidates:  # the mask was drawn on one of the two orientations
            if candidate.size == (width, height):
                return np.array(candidate, dtype=np.uint8)
        image_width, image_height = candidates[0].size
        raise DataError(
            f"{self.mask_paths[index]}: semantic mask is {width}x{height} (w x h) but image {path} "
            f"is {image_width}x{image_height}; they must have the same size"
        )

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Image ``[3, h, w]`` as the transform makes it (float32 normalised; uint8 when compact)
        and ``{sem_seg, image_id, orig_size, image_size}``."""
        sem_seg = self.load_class_map(index)
        image = self._aligned_image(index, sem_seg.shape)
        output = self.transform(image, sem_seg=sem_seg)
        image_tensor = output["image"]
        height, width = image.shape[:2]
        target = {
            "sem_seg": output["sem_seg"],
            "image_id": torch.tensor(self.image_ids[index], dtype=torch.int64),
            "orig_size": torch.tensor([height, width], dtype=torch.int64),
            "image_size": torch.tensor(list(image_tensor.shape[-2:]), dtype=torch.int64),
        }
        return image_tensor, target
