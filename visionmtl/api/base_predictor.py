"""What every predictor shares: pre-processing, batching, post-processing and ``Result`` building.

``Predictor`` (PyTorch) and ``OnnxPredictor`` (ONNX Runtime) differ only in :meth:`_network`,
how the network and the mask head are run; the input they get and what is done with their outputs
(:func:`~visionmtl.models.postprocess.postprocess`) are this code.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace

import numpy as np
import torch

from visionmtl.api.instance_masks import InstanceMasks
from visionmtl.api.io import ImageInput, load_rgb
from visionmtl.api.result import Result
from visionmtl.api.sources import Frame, iter_frames
from visionmtl.data import SIZE_DIVISOR, Collator, Transform
from visionmtl.data.classes import semantic_ids
from visionmtl.models.postprocess import MaskLogitsFn, PostprocessSettings, postprocess
from visionmtl.structures import ClassSpec, Prediction


class BasePredictor:
    """Images in, one :class:`Result` per image out, at the original size.

    Args:
        classes: the class lists the model's labels and semantic ids refer to.
        transform: the evaluation preprocessing
            (:func:`~visionmtl.evaluation.validation.eval_transform_for`).
        score_thresh: drop detections below this score.
        batch_size: images per forward pass (padding to the largest image of a batch changes
            the outputs slightly when image sizes differ, so the same batches give the same
            numbers).
    """

    def __init__(
        self,
        classes: ClassSpec,
        transform: Transform,
        score_thresh: float,
        batch_size: int,
    ) -> None:
        self.score_thresh = score_thresh
        self.batch_size = batch_size
        self.transform = transform
        self.collate = Collator(SIZE_DIVISOR)
        self.category_ids = np.asarray(classes.category_ids, dtype=np.int64)
        self.class_names = list(classes.class_names)
        # Semantic head index -> reported id: the category id for detection classes, ids above
        # every category id for the head's own ("stuff") classes; 0 stays background.
        self.sem_to_category, self.sem_class_names = semantic_ids(classes)

    def __call__(
        self, images: ImageInput | Sequence[ImageInput], score_thresh: float | None = None
    ) -> list[Result]:
        """One or several images (paths, PIL images, HxWx3 arrays) -> one Result per image;
        ``score_thresh`` overrides the predictor's threshold for this call."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        results: list[Result] = []
        for start in range(0, len(images), self.batch_size):
            arrays = [load_rgb(source) for source in images[start : start + self.batch_size]]
            results.extend(self._predict_batch(arrays, thresh))
        return results

    def stream(
        self, sources: ImageInput | Iterable[ImageInput], score_thresh: float | None = None
    ) -> Iterator[tuple[Frame, Result]]:
        """(frame, result) for every image and video frame of ``sources`` (files, folders, glob
        patterns, videos, PIL images, arrays: :func:`~visionmtl.api.sources.iter_frames`), as
        each batch of ``batch_size`` frames is done: only one batch is held in memory, so a long
        video streams in flat memory."""
        thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        frames = iter_frames(sources)
        while batch := list(itertools.islice(frames, self.batch_size)):
            results = self._predict_batch([frame.image for frame in batch], thresh)
            yield from zip(batch, results, strict=True)

    def postprocess_settings(self) -> PostprocessSettings:
        """The post-processing settings (thresholds, strides) of the next batch;
        ``score_thresh`` is replaced by the predictor's own (or a call's) threshold."""
        raise NotImplementedError

    def _network(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], MaskLogitsFn | None]:
        """images [B, 3, H, W] (normalised, padded to ``SIZE_DIVISOR``) -> the network's raw
        outputs and the mask head (features, rois -> mask logits), None without ``inst``."""
        raise NotImplementedError

    def _inference(self) -> AbstractContextManager:
        """The context the network and post-processing run in (e.g. autocast); none here."""
        return contextlib.nullcontext()

    def _run(
        self,
        images: torch.Tensor,
        image_sizes: list[tuple[int, int]],
        output_sizes: list[tuple[int, int]],
        settings: PostprocessSettings,
    ) -> list[Prediction]:
        """Per image predictions at ``output_sizes``: the network, then ``postprocess``."""
        with self._inference():
            raw, mask_logits = self._network(images)
            return postprocess(
                raw, image_sizes, output_sizes, settings, mask_logits, mask_crops=True
            )

    @torch.no_grad()
    def _predict_batch(self, arrays: list[np.ndarray], thresh: float) -> list[Result]:
        """RGB arrays [H, W, 3] uint8 -> Results; the threshold acts before NMS (as in the
        detection head) and again on the final scores."""
        batch = []
        for array in arrays:
            image = self.transform(array)["image"]
            size = torch.tensor(image.shape[-2:])
            batch.append((image, {"image_size": size, "orig_size": torch.tensor(array.shape[:2])}))
        images, metas = self.collate(batch)
        image_sizes = [tuple(m["image_size"].tolist()) for m in metas]
        orig_sizes = [tuple(m["orig_size"].tolist()) for m in metas]
        settings = replace(self.postprocess_settings(), score_thresh=thresh)
        outputs = self._run(images, image_sizes, orig_sizes, settings)
        return [
            self._to_result(output, size, thresh)
            for output, size in zip(outputs, orig_sizes, strict=True)
        ]

    def _to_result(
        self, output: dict[str, torch.Tensor], image_size: tuple[int, int], thresh: float
    ) -> Result:
        empty = torch.zeros(0)
        scores = output.get("scores", empty).float().cpu().numpy()
        keep = scores >= thresh
        boxes = output.get("boxes", torch.zeros(0, 4)).float().cpu().numpy()[keep]
        labels = output.get("labels", empty.long()).cpu().numpy()[keep]
        sem_seg = output.get("sem_seg")
        masks = None
        if "mask_crops" in output:  # cropped to the boxes: a 12 MP photo needs no [N, H, W] array
            kept = np.flatnonzero(keep)
            masks = InstanceMasks(
                _host_crops([output["mask_crops"][i] for i in kept]),
                output["mask_regions"].numpy()[kept],
                image_size,
            )
        return Result(
            boxes=boxes.astype(np.float32),
            scores=scores[keep].astype(np.float32),
            labels=self.category_ids[labels] if len(labels) else np.zeros(0, np.int64),
            label_names=[self.class_names[k] for k in labels],
            sem_seg=None if sem_seg is None else self.sem_to_category[sem_seg.cpu().numpy()],
            image_size=tuple(image_size),
            masks=masks,
            sem_class_names=dict(self.sem_class_names) if sem_seg is not None else {},
            thing_ids=tuple(int(i) for i in self.category_ids),
        )


def _host_crops(crops: list[torch.Tensor]) -> list[np.ndarray]:
    """Bool crops on the device -> numpy, in one device-to-host copy (not one per detection)."""
    if not crops:
        return []
    flat = torch.cat([crop.flatten() for crop in crops]).cpu().numpy()
    pieces = np.split(flat, np.cumsum([crop.numel() for crop in crops])[:-1])
    return [piece.reshape(crop.shape) for piece, crop in zip(pieces, crops, strict=True)]
