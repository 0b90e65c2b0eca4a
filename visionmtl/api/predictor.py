"""The Python API: ``Predictor.from_checkpoint(path)(images) -> list[Result]``."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from visionmtl.api.io import ImageInput, load_rgb
from visionmtl.api.result import Result
from visionmtl.api.sources import Frame, iter_frames
from visionmtl.config import Config
from visionmtl.data import SIZE_DIVISOR, Collator
from visionmtl.data.classes import semantic_ids
from visionmtl.engine.checkpoint import load_model
from visionmtl.evaluation.validation import eval_transform
from visionmtl.precision import inference_autocast


class Predictor:
    """Run a trained model on images with exactly the evaluation preprocessing.

    Args:
        model: a MultiTaskModel with its ``classes`` (put in eval mode here).
        cfg: the config it was trained with (image size, thresholds).
        device: where to run.
        score_thresh: drop detections below this score (default: the config's ``eval.score_thresh``).
        batch_size: images per forward pass (default: the config's ``eval.batch_size``, as in
            validation: padding to the largest image of a batch changes the outputs slightly
            when image sizes differ, so the same batches give the same numbers).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: Config,
        device: str | torch.device = "cpu",
        score_thresh: float | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.score_thresh = cfg.eval.score_thresh if score_thresh is None else score_thresh
        self.batch_size = cfg.eval.batch_size if batch_size is None else batch_size
        self.transform = eval_transform(cfg)
        self.collate = Collator(SIZE_DIVISOR)
        classes = getattr(model, "classes", None)
        if classes is None:
            raise ValueError("the model has no classes: build it with build_model or load_model")
        self.category_ids = np.asarray(classes.category_ids, dtype=np.int64)
        self.class_names = list(classes.class_names)
        # Semantic head index -> reported id: the category id for detection classes, ids above
        # every category id for the head's own ("stuff") classes; 0 stays background.
        self.sem_to_category, self.sem_class_names = semantic_ids(classes)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        score_thresh: float | None = None,
        batch_size: int | None = None,
    ) -> Predictor:
        """Build the model from a checkpoint written by ``visionmtl train`` (no other file needed)."""
        model, cfg = load_model(path, device=device)
        return cls(model, cfg, device=device, score_thresh=score_thresh, batch_size=batch_size)

    def __call__(
        self, images: ImageInput | Sequence[ImageInput], score_thresh: float | None = None
    ) -> list[Result]:
        """One or several images (paths, PIL images, HxWx3 arrays) -> one Result per image;
        ``score_thresh`` overrides the predictor's threshold for this call."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        results: list[Result] = []
        with self._det_score_thresh(thresh):
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
            with self._det_score_thresh(thresh):  # not held while the caller has the results
                results = self._predict_batch([frame.image for frame in batch], thresh)
            yield from zip(batch, results, strict=True)

    @contextlib.contextmanager
    def _det_score_thresh(self, thresh: float) -> Iterator[None]:
        """Drop low scores inside the detection head (before NMS and mask pasting), and give the
        model back with its own threshold afterwards (it may be shared with evaluation)."""
        head = self.model.heads["det"] if "det" in self.model.heads else None
        if head is None:
            yield
            return
        saved, head.score_thresh = head.score_thresh, thresh
        try:
            yield
        finally:
            head.score_thresh = saved

    @torch.no_grad()
    def _predict_batch(self, arrays: list[np.ndarray], thresh: float) -> list[Result]:
        batch = []
        for array in arrays:
            image = self.transform(array)["image"]
            size = torch.tensor(image.shape[-2:])
            batch.append((image, {"image_size": size, "orig_size": torch.tensor(array.shape[:2])}))
        images, metas = self.collate(batch)
        image_sizes = [tuple(m["image_size"].tolist()) for m in metas]
        orig_sizes = [tuple(m["orig_size"].tolist()) for m in metas]
        with inference_autocast(self.device, self.cfg.eval.amp):
            outputs = self.model(
                images.to(self.device), image_sizes=image_sizes, output_sizes=orig_sizes
            )
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
        masks = output.get("masks")
        return Result(
            boxes=boxes.astype(np.float32),
            scores=scores[keep].astype(np.float32),
            labels=self.category_ids[labels] if len(labels) else np.zeros(0, np.int64),
            label_names=[self.class_names[k] for k in labels],
            sem_seg=None if sem_seg is None else self.sem_to_category[sem_seg.cpu().numpy()],
            image_size=tuple(image_size),
            masks=None if masks is None else masks.cpu().numpy()[keep],
            sem_class_names=dict(self.sem_class_names) if sem_seg is not None else {},
            thing_ids=tuple(int(i) for i in self.category_ids),
        )
