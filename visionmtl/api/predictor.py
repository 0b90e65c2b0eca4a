"""The Python API: ``Predictor.from_checkpoint(path)(images) -> list[Result]``."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import torch

from visionmtl.api.base_predictor import BasePredictor
from visionmtl.config import Config
from visionmtl.engine.checkpoint import load_model
from visionmtl.evaluation.validation import eval_transform
from visionmtl.models.postprocess import MaskLogitsFn, PostprocessSettings
from visionmtl.precision import inference_autocast


class Predictor(BasePredictor):
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
        classes = getattr(model, "classes", None)
        if classes is None:
            raise ValueError("the model has no classes: build it with build_model or load_model")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        super().__init__(
            classes,
            eval_transform(cfg),  # validation's preprocessing
            cfg.eval.score_thresh if score_thresh is None else score_thresh,
            cfg.eval.batch_size if batch_size is None else batch_size,
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        score_thresh: float | None = None,
        batch_size: int | None = None,
    ) -> Predictor:
        """Build the model from a checkpoint written by ``visionmtl train`` (no other file needed)."""
        model, cfg = load_model(path, device=device)
        return cls(model, cfg, device=device, score_thresh=score_thresh, batch_size=batch_size)

    def postprocess_settings(self) -> PostprocessSettings:
        """The model's heads' current settings (``nms_thresh``, ``max_detections``, mask
        threshold, ...): a change to ``predictor.model.heads`` acts on the next call."""
        return PostprocessSettings.from_model(self.model)

    def _network(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], MaskLogitsFn | None]:
        """The model's raw outputs and mask head in PyTorch."""
        raw = self.model.raw_outputs(images.to(self.device))
        return raw, self.model.mask_logits if "inst" in self.model.heads else None

    def _inference(self) -> AbstractContextManager:
        """The config's ``eval.amp``, as in validation."""
        return inference_autocast(self.device, self.cfg.eval.amp)
