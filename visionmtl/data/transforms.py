"""Image + target transforms (resize, flip, colour jitter, normalisation) built on albumentations.

Geometry is applied once to the image, the boxes, every instance mask and the semantic map together,
so all targets stay aligned. Given masks and a semantic map are resized with nearest-neighbour;
given ``shapes`` (the COCO data set's segmentations) are drawn afterwards straight at the output
size (:mod:`visionmtl.data.rasterize`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import Tensor
from torchvision.ops import clip_boxes_to_image, remove_small_boxes

from visionmtl.data.rasterize import Shapes

# ImageNet statistics: the default here, and what every model trained before the run's config
# held data.mean / data.std (a checkpoint of format < 3) expects.
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# The pipeline steps whose geometry drawn ``shapes`` follow (resize, then maybe a flip; colour
# jitter moves no pixel): :meth:`Transform._with_shapes` knows no other.
_SHAPES_KNOWN: frozenset[str] = frozenset({"LongestMaxSize", "HorizontalFlip", "ColorJitter"})

# Boxes narrower or shorter than this (in pixels, after the transform) are dropped with their
# label and mask: a sub-pixel box cannot be learned and breaks box-regression targets.
MIN_BOX_SIZE: float = 1.0


def scale_shift(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``scale``, ``shift`` [3] with (pixel / 255 - mean) / std == pixel * scale - shift."""
    if mean is None or std is None:  # a config's data.mean/std before resolve_backbone_defaults
        raise ValueError("mean and std are None: resolve the config's backbone defaults first")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values (R, G, B), std > 0; got {mean}, {std}")
    std_array = np.asarray(std, np.float32)
    scale = (1.0 / (255.0 * std_array)).astype(np.float32)
    shift = (np.asarray(mean, np.float32) / std_array).astype(np.float32)
    return scale, shift


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape [H, W, 3], got {tuple(image.shape)}")


def _sem_uint8(sem_seg: np.ndarray) -> np.ndarray:
    """A class map ``[H, W]`` as uint8, refused when a value is outside 0..255 (uint8 would wrap)."""
    sem_seg = np.asarray(sem_seg)
    if sem_seg.size and (sem_seg.min() < 0 or sem_seg.max() > 255):
        raise ValueError("sem_seg values must lie in 0..255")
    return sem_seg.astype(np.uint8)


def _normalize(image: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> Tensor:
    _check_rgb(image)
    # numpy on one contiguous array: much faster than small torch ops in DataLoader workers
    scaled = image.astype(np.float32) * scale - shift
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


def _compact(image: np.ndarray) -> Tensor:
    """uint8 ``[H, W, 3]`` -> uint8 ``[3, H, W]``: a quarter of float32's bytes through worker
    shared memory and the host-device copy; :class:`~visionmtl.data.batching.DeviceInput`
    normalises it on the device."""
    _check_rgb(image)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, np.uint8).transpose(2, 0, 1)))


def normalize_image(
    image: np.ndarray, mean: Sequence[float] = MEAN, std: Sequence[float] = STD
) -> Tensor:
    """Turn an RGB uint8 image ``[H, W, 3]`` into a float32 tensor ``[3, H, W]`` normalised with
    ``mean`` and ``std`` (per channel, on pixel / 255)."""
    return _normalize(image, *scale_shift(mean, std))


class Transform:
    """Resize (+ augment in training) an image with its targets, then normalise.

    Eval: the longer side is resized to ``image_size`` (aspect kept, upscaling allowed); with
    ``image_size=None`` the size is kept and only normalisation happens.
    Train: longer side = ``image_size * U(scale_range)``, horizontal flip with ``hflip_prob``,
    colour jitter of strength ``color_jitter`` (brightness/contrast/saturation; hue a quarter of it).
    Normalisation: ``(pixel / 255 - mean) / std`` per channel (default ImageNet's ``MEAN``, ``STD``).
    With ``compact=True`` (the training loader) the image stays uint8 ``[3, h, w]`` and ``sem_seg``
    uint8: :class:`~visionmtl.data.batching.DeviceInput` normalises on the device, to the same
    values.

    Random state: albumentations keeps its own generator; it is (re)seeded from
    ``torch.initial_seed()`` whenever that changes, so results follow ``torch.manual_seed`` and every
    DataLoader worker (which torch seeds differently per worker and per epoch) gets its own stream.

    Picklable (DataLoader workers with ``spawn``): only the parameters are pickled.
    """

    def __init__(
        self,
        image_size: int | None,
        train: bool,
        scale_range: tuple[float, float] = (0.75, 1.25),
        hflip_prob: float = 0.5,
        color_jitter: float = 0.2,
        mean: Sequence[float] = MEAN,
        std: Sequence[float] = STD,
        compact: bool = False,
    ) -> None:
        if image_size is not None and image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        if train and image_size is None:
            raise ValueError("a training transform needs an image_size")
        self.image_size = image_size
        self.train = train
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.hflip_prob = float(hflip_prob)
        self.color_jitter = float(color_jitter)
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self._scale, self._shift = scale_shift(self.mean, self.std)
        self.compact = bool(compact)
        self._pipeline = self._build()
        self._seed: int | None = None

    def _build(self) -> A.Compose | None:
        if self.image_size is None:  # identity + normalise; albumentations would warn on no steps
            return None
        steps: list[Any] = [A.LongestMaxSize(max_size=self._long_sides())]
        if self.train:
            if self.hflip_prob > 0:
                steps.append(A.HorizontalFlip(p=self.hflip_prob))
            if self.color_jitter > 0:
                strength = self.color_jitter
                steps.append(
                    A.ColorJitter(
                        brightness=strength,
                        contrast=strength,
                        saturation=strength,
                        hue=min(strength / 4.0, 0.5),
                        p=0.8,
                    )
                )
        bbox_params = A.BboxParams(
            format="pascal_voc",
            label_fields=["labels", "instance_ids"],
            clip=True,
            min_width=MIN_BOX_SIZE,
            min_height=MIN_BOX_SIZE,
        )
        # applied params: whether this sample was flipped, for the shapes drawn after it
        return A.Compose(steps, bbox_params=bbox_params, save_applied_params=True)

    def _long_sides(self) -> int | list[int]:
        """The long side after resizing: ``image_size``, or in training every whole size of
        ``image_size * scale_range`` (LongestMaxSize draws one): the scale jitter in the same,
        single resize of the image and its masks (not a resize to ``image_size`` followed by
        a rescale)."""
        assert self.image_size is not None
        low, high = self.scale_range
        if not self.train or (low, high) == (1.0, 1.0):
            return self.image_size
        smallest = max(1, round(self.image_size * low))
        return list(range(smallest, max(smallest, round(self.image_size * high)) + 1))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pipeline"] = None
        state["_seed"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pipeline = self._build()

    def __repr__(self) -> str:
        return (
            f"Transform(image_size={self.image_size}, train={self.train}, "
            f"scale_range={self.scale_range}, hflip_prob={self.hflip_prob}, "
            f"color_jitter={self.color_jitter}, mean={self.mean}, std={self.std}, "
            f"compact={self.compact})"
        )

    @property
    def _sem_dtype(self) -> type:
        return np.uint8 if self.compact else np.int64

    def _image_out(self, image: np.ndarray) -> Tensor:
        return _compact(image) if self.compact else _normalize(image, self._scale, self._shift)

    def _sync_seed(self) -> None:
        assert self._pipeline is not None
        seed = torch.initial_seed() % 2**32
        if seed != self._seed:
            self._pipeline.set_random_seed(seed)
            self._seed = seed

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        sem_seg: np.ndarray | None = None,
        shapes: Shapes | None = None,
    ) -> dict[str, Tensor]:
        """Transform an RGB uint8 image ``[H, W, 3]`` and whichever targets are given.

        ``boxes`` ``[N, 4]`` xyxy pixels, ``labels`` ``[N]``, ``masks`` ``[N, H, W]`` (aligned with
        ``boxes`` when both are given), ``sem_seg`` ``[H, W]`` with values 0..255.
        Returns ``image`` float32 ``[3, h, w]`` normalised and, for each given input, ``boxes``
        float32 ``[M, 4]``, ``labels`` int64 ``[M]``, ``masks`` uint8 ``[M, h, w]``, ``sem_seg`` int64
        ``[h, w]``; boxes below 1 px are dropped together with their labels and masks. With
        ``compact``: ``image`` uint8 ``[3, h, w]`` and ``sem_seg`` uint8, not normalised.

        ``shapes`` (instead of ``masks`` and ``sem_seg``; one segment per box): the instances are
        drawn after the image is placed, straight at the size needed (:mod:`~visionmtl.data.rasterize`),
        giving ``mask_crops`` uint8 ``[M, S, S]`` and ``mask_regions`` float32 ``[M, 4]`` (xyxy,
        output pixels: the area each crop covers) instead of ``masks``, and ``sem_seg``.
        """
        if shapes is not None and (masks is not None or sem_seg is not None or boxes is None):
            raise ValueError("shapes replace masks and sem_seg, and need the boxes they belong to")
        if self._pipeline is None:
            if shapes is not None:
                output, kept = self._identity(image, boxes, labels, None, None)
                return self._with_shapes(output, shapes, boxes, kept, (1.0, 1.0), False)
            return self._identity(image, boxes, labels, masks, sem_seg)[0]
        self._sync_seed()
        num_boxes = 0 if boxes is None else len(boxes)
        box_array = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
        box_array = box_array.reshape(-1, 4)
        label_array = (
            np.zeros(num_boxes, np.int64) if labels is None else np.asarray(labels, np.int64)
        )
        if len(label_array) != num_boxes:
            raise ValueError(f"got {num_boxes} boxes but {len(label_array)} labels")
        if masks is not None and boxes is not None and len(masks) != num_boxes:
            raise ValueError(f"got {num_boxes} boxes but {len(masks)} masks")

        inputs: dict[str, Any] = {
            "image": image,
            "bboxes": box_array,
            "labels": label_array,
            "instance_ids": np.arange(num_boxes),
        }
        if masks is not None and len(masks) > 0:
            inputs["masks"] = [np.asarray(mask, np.uint8) for mask in masks]
        if sem_seg is not None:
            inputs["mask"] = _sem_uint8(sem_seg)
        result = self._pipeline(**inputs)

        out_image: np.ndarray = result["image"]
        out_height, out_width = out_image.shape[:2]
        output: dict[str, Tensor] = {"image": self._image_out(out_image)}
        kept = np.asarray(result["instance_ids"], np.int64).reshape(-1)
        if boxes is not None:
            output["boxes"] = torch.as_tensor(
                np.asarray(result["bboxes"], np.float32).reshape(-1, 4)
            )
            output["labels"] = torch.as_tensor(np.asarray(result["labels"], np.int64).reshape(-1))
        if masks is not None:
            if len(masks) == 0:
                mask_array = np.zeros((0, out_height, out_width), np.uint8)
            else:
                mask_array = np.stack(result["masks"]).astype(np.uint8)
                if boxes is not None:
                    mask_array = mask_array[kept]
            output["masks"] = torch.from_numpy(np.ascontiguousarray(mask_array))
        if sem_seg is not None:
            output["sem_seg"] = torch.from_numpy(result["mask"].astype(self._sem_dtype))
        if shapes is not None:
            height, width = image.shape[:2]
            scale = (out_width / width, out_height / height)
            applied = {name for name, _ in result["applied_transforms"]}
            if applied - _SHAPES_KNOWN:  # a new geometric step must be taught to _with_shapes
                raise NotImplementedError(f"shapes cannot follow {sorted(applied - _SHAPES_KNOWN)}")
            flipped = "HorizontalFlip" in applied
            return self._with_shapes(output, shapes, box_array, kept, scale, flipped)
        return output

    def _with_shapes(
        self,
        output: dict[str, Tensor],
        shapes: Shapes,
        boxes: np.ndarray,
        kept: np.ndarray,
        scale: tuple[float, float],
        flipped: bool,
    ) -> dict[str, Tensor]:
        """``output`` plus the ``kept`` instances of ``shapes`` drawn at the output size:
        ``mask_crops``, ``mask_regions`` (output pixels) and ``sem_seg``, mirrored if ``flipped``."""
        out_size = (int(output["image"].shape[-2]), int(output["image"].shape[-1]))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        crops, regions, sem_seg = shapes.draw(boxes, kept, scale, out_size)
        regions = regions * np.array([scale[0], scale[1], scale[0], scale[1]])
        if flipped:
            crops, sem_seg = crops[:, :, ::-1], sem_seg[:, ::-1]
            regions = np.stack(
                [
                    out_size[1] - regions[:, 2],
                    regions[:, 1],
                    out_size[1] - regions[:, 0],
                    regions[:, 3],
                ],
                axis=1,
            )
        output["mask_crops"] = torch.from_numpy(np.ascontiguousarray(crops))
        output["mask_regions"] = torch.from_numpy(regions.astype(np.float32).reshape(-1, 4))
        output["sem_seg"] = torch.from_numpy(np.ascontiguousarray(sem_seg, self._sem_dtype))
        return output

    def _identity(
        self,
        image: np.ndarray,
        boxes: np.ndarray | None,
        labels: np.ndarray | None,
        masks: np.ndarray | None,
        sem_seg: np.ndarray | None,
    ) -> tuple[dict[str, Tensor], np.ndarray]:
        """Normalise only; boxes are clipped and sub-pixel ones dropped as in the resizing path.
        Returns the output and the indices of the boxes kept."""
        height, width = image.shape[:2]
        output: dict[str, Tensor] = {"image": self._image_out(image)}
        keep, num_boxes = None, None
        if boxes is not None:
            box_tensor = torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
            box_tensor = clip_boxes_to_image(box_tensor, (height, width))
            kept = remove_small_boxes(box_tensor, MIN_BOX_SIZE)  # indices, in order
            keep, num_boxes = kept.numpy(), len(box_tensor)
            label_array = (
                np.zeros(num_boxes, np.int64) if labels is None else np.asarray(labels, np.int64)
            )
            output["boxes"] = box_tensor[kept]
            output["labels"] = torch.from_numpy(label_array[keep])
        if masks is not None:
            mask_array = np.asarray(masks, np.uint8).reshape(-1, height, width)
            if keep is not None and len(mask_array) == num_boxes:
                mask_array = mask_array[keep]
            output["masks"] = torch.from_numpy(np.ascontiguousarray(mask_array))
        if sem_seg is not None:
            output["sem_seg"] = torch.from_numpy(_sem_uint8(sem_seg).astype(self._sem_dtype))
        return (
            output,
            keep if keep is not None else np.zeros(0, np.int64),
        )


def build_transforms(
    image_size: int,
    train: bool,
    scale_range: tuple[float, float] = (0.75, 1.25),
    hflip_prob: float = 0.5,
    color_jitter: float = 0.2,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
    compact: bool = False,
) -> Transform:
    """Build the training (augmenting) or evaluation (resize only) transform; see :class:`Transform`."""
    return Transform(image_size, train, scale_range, hflip_prob, color_jitter, mean, std, compact)
