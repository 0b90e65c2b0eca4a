"""Batching: pad images and dense targets to a common, stride-aligned size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from visionmtl.data.transforms import scale_shift
from visionmtl.structures import IGNORE_INDEX

# Images are padded to a multiple of this: the coarsest stride of the backbone levels (8, 16, 32 by
# default), so each backbone map covers the padded image exactly. Training, evaluation, the
# Predictor and the ONNX export all pad with it (one value: the same padding, the same outputs).
SIZE_DIVISOR = 32


class Collator:
    """``collate_fn`` for a DataLoader over ``(image [3, h, w], target dict)`` pairs.

    Images are padded bottom/right with 0 to ``[B, 3, Hp, Wp]``, ``Hp`` and ``Wp`` multiples of
    ``size_divisor``; each target's ``masks`` ``[N, h, w]`` are padded with 0 and ``sem_seg``
    ``[h, w]`` with 255 (ignore) to ``[.., Hp, Wp]``. Other keys (``image_size`` stays the unpadded
    size; ``mask_crops`` cover ``mask_regions``, in image pixels: nothing to pad) are passed
    through. Targets may be ``{}`` (inference). Picklable.
    """

    def __init__(self, size_divisor: int = SIZE_DIVISOR) -> None:
        if size_divisor <= 0:
            raise ValueError(f"size_divisor must be positive, got {size_divisor}")
        self.size_divisor = size_divisor

    def __repr__(self) -> str:
        return f"Collator(size_divisor={self.size_divisor})"

    def __call__(
        self, batch: list[tuple[Tensor, dict[str, Tensor]]]
    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """Return images ``[B, 3, Hp, Wp]`` and the list of (padded) targets."""
        if not batch:
            raise ValueError("cannot collate an empty batch")
        images = [image for image, _ in batch]
        max_height = max(image.shape[-2] for image in images)
        max_width = max(image.shape[-1] for image in images)
        padded_height = math.ceil(max_height / self.size_divisor) * self.size_divisor
        padded_width = math.ceil(max_width / self.size_divisor) * self.size_divisor
        batched = images[0].new_zeros(
            (len(images), images[0].shape[0], padded_height, padded_width)
        )
        for slot, image in zip(batched, images, strict=True):
            slot[:, : image.shape[-2], : image.shape[-1]].copy_(image)
        targets = [self._pad_target(target, padded_height, padded_width) for _, target in batch]
        return batched, targets

    @staticmethod
    def _pad_target(target: dict[str, Tensor], height: int, width: int) -> dict[str, Tensor]:
        padded = dict(target)
        for key, value in (("masks", 0), ("sem_seg", IGNORE_INDEX)):
            if key in target:
                tensor = target[key]
                padding = (0, width - tensor.shape[-1], 0, height - tensor.shape[-2])
                padded[key] = F.pad(tensor, padding, value=value)
        return padded


def move_targets(targets: list[dict[str, Tensor]], device: torch.device) -> list[dict[str, Tensor]]:
    """A batch's targets (as :class:`Collator` returns them) to ``device`` (non-blocking)."""
    return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


class DeviceInput:
    """A collated training batch on ``device``, ready for the model.

    uint8 images ``[B, 3, Hp, Wp]`` (a ``compact`` transform's) become float32
    ``(pixel / 255 - mean) / std`` there, with the padding beyond each target's ``image_size`` set
    to 0 as the CPU path pads normalised images: the same input, a quarter of the bytes through
    worker shared memory and the host-device copy, and no float work in the workers. Float images
    (already normalised) pass through. ``channels_last`` sets the memory layout.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        scale, shift = scale_shift(mean, std)
        self.device = device
        self.scale = torch.from_numpy(scale).view(1, 3, 1, 1).to(device)
        self.shift = torch.from_numpy(shift).view(1, 3, 1, 1).to(device)
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(
        self, images: Tensor, targets: list[dict[str, Tensor]]
    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """(images float32 ``[B, 3, Hp, Wp]``, targets) on the device."""
        return self.images(images, targets), move_targets(targets, self.device)

    def images(self, images: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
        """Only the images, on the device and normalised (``targets`` give the unpadded sizes
        and stay where they are)."""
        images = images.to(self.device, non_blocking=True, memory_format=self.layout)
        if images.dtype != torch.uint8:
            return images
        if any("image_size" not in t for t in targets):
            raise ValueError(
                "DeviceInput: uint8 images need each target's image_size (the unpadded "
                "size), to set the padding to 0 after normalising"
            )
        # unpadded sizes read from the host copies: no device sync per image
        sizes = [t["image_size"].tolist() for t in targets]
        images = images.float().mul_(self.scale).sub_(self.shift)
        for image, (height, width) in zip(images, sizes, strict=True):
            image[:, height:].zero_()
            image[:, :, width:].zero_()
        return images


def orientation_groups(dataset: Any) -> list[int]:
    """Per image of ``dataset`` (anything with ``image_info(i)``): 1 if wider than tall, else 0,
    the aspect-ratio groups that keep batches from padding portrait and landscape images to a
    square. Sizes come from ``height``/``width`` in the info (COCO JSON), else from the image
    file's header (PNG sources), which PIL reads without decoding the pixels."""
    groups = []
    for index in range(len(dataset)):
        info = dataset.image_info(index)
        if "height" in info and "width" in info:
            height, width = int(info["height"]), int(info["width"])
        else:
            try:
                with Image.open(info["path"]) as image:
                    width, height = image.size
            except (OSError, ValueError):
                # Group 0; loading the sample applies the data set's policy for broken files
                # (skipped with a warning or a DataError naming it), as without grouping.
                width = height = 0
        groups.append(int(width > height))
    return groups


def worker_options(num_workers: int) -> dict[str, Any]:
    """DataLoader keyword arguments for ``num_workers`` workers that run one OpenCV thread each;
    call it where the DataLoader is built (the main process): it limits OpenCV here first, see
    :func:`limit_opencv_threads`."""
    if num_workers > 0:
        limit_opencv_threads()
    return {"num_workers": num_workers, "worker_init_fn": limit_worker_threads}


def limit_opencv_threads() -> None:
    """One OpenCV thread in this process. Call it in the main process before a DataLoader starts
    workers: forked workers inherit the setting. OpenCV's thread pool, once it has run, does not
    survive a fork, and ``cv2.setNumThreads`` in the forked worker then waits forever (mmengine
    likewise sets it in the parent)."""
    import cv2  # albumentations' dependency

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def limit_worker_threads(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker. torch already runs one thread
    in each worker, but OpenCV (albumentations' resizes and colour ops) starts a pool as large as
    the machine in every worker: 8 workers x 64 cores = 512 threads fighting for 64 cores. A
    forked worker has it from the main process (:func:`limit_opencv_threads`, which must run
    there first); a spawned one sets it here."""
    limit_opencv_threads()
