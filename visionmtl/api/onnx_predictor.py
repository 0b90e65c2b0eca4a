"""``OnnxPredictor.from_export(DIR)(images) -> list[Result]``: the exported graphs in ONNX Runtime.

Called exactly as :class:`~visionmtl.api.predictor.Predictor` (``__call__``, ``stream``) and
returning the same :class:`Result` objects: the pre-processing, post-processing and result
building are :class:`BasePredictor`'s, only the network runs in ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from visionmtl.api.base_predictor import BasePredictor
from visionmtl.api.onnx_export import EXPORT_FORMAT, EXPORT_VERSION, METADATA_FILE
from visionmtl.errors import ExportError
from visionmtl.models.postprocess import MASK_FEATURES, PostprocessSettings, postprocess
from visionmtl.structures import ClassSpec, Prediction


class OnnxPredictor(BasePredictor):
    """Run an export of ``visionmtl export CKPT --format onnx --out DIR`` on images (CPU).

    Args:
        export_dir: the ``--out`` directory (``model.json``, ``model.onnx``, ``mask_head.onnx``).
        score_thresh: drop detections below this score (default: the model's ``eval.score_thresh``).
        batch_size: images per run (default: the model's ``eval.batch_size``).
        num_threads: ONNX Runtime's intra-op threads (default: its own choice, all cores).
    """

    def __init__(
        self,
        export_dir: str | Path,
        score_thresh: float | None = None,
        batch_size: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.export_dir = Path(export_dir)
        self.metadata = read_metadata(self.export_dir)
        settings = PostprocessSettings.from_dict(self.metadata["postprocess"])
        source = self.metadata["input"]
        super().__init__(
            ClassSpec.from_dict(self.metadata["classes"]),
            settings,
            source["image_size"],
            source["mean"],
            source["std"],
            settings.score_thresh if score_thresh is None else score_thresh,
            self.metadata["batch_size"] if batch_size is None else batch_size,
        )
        self.output_names = list(self.metadata["outputs"])
        self.network = _session(self.export_dir / self.metadata["network"], num_threads)
        mask_head = self.metadata.get("mask_head")
        self.mask_head = _session(self.export_dir / mask_head, num_threads) if mask_head else None

    @classmethod
    def from_export(
        cls,
        path: str | Path,
        score_thresh: float | None = None,
        batch_size: int | None = None,
        num_threads: int | None = None,
    ) -> OnnxPredictor:
        """Load an export directory written by ``visionmtl export`` (no checkpoint needed)."""
        return cls(path, score_thresh=score_thresh, batch_size=batch_size, num_threads=num_threads)

    def raw_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [B, 3, H, W] float32 (normalised, H and W multiples of the size divisor) -> the
        raw outputs of ``model.onnx`` by name, as ``MultiTaskModel.raw_outputs``."""
        divisor = self.metadata["input"]["size_divisor"]
        if (
            images.dim() != 4
            or images.shape[1] != 3
            or images.shape[2] % divisor
            or images.shape[3] % divisor
        ):
            raise ValueError(
                f"OnnxPredictor.raw_outputs expects images [B, 3, H, W] with H and W multiples of "
                f"{divisor}, got {tuple(images.shape)}"
            )
        arrays = self.network.run(None, {"images": images.float().cpu().numpy()})
        return {
            name: torch.from_numpy(array)
            for name, array in zip(self.output_names, arrays, strict=True)
        }

    def mask_logits(self, features: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """``mask_head.onnx`` on ``rois`` [R, 5] over the pyramid maps -> [R, C, M, M]."""
        feed = {"rois": rois.float().numpy()}
        feed.update({f"{MASK_FEATURES}_{i}": f.numpy() for i, f in enumerate(features)})
        return torch.from_numpy(self.mask_head.run(None, feed)[0])

    def _run(
        self,
        images: torch.Tensor,
        image_sizes: list[tuple[int, int]],
        output_sizes: list[tuple[int, int]],
        settings: PostprocessSettings,
    ) -> list[Prediction]:
        raw = self.raw_outputs(images)
        mask_logits = self.mask_logits if self.mask_head is not None else None
        return postprocess(raw, image_sizes, output_sizes, settings, mask_logits)


def read_metadata(export_dir: Path) -> dict[str, Any]:
    """``model.json`` of an export directory, checked for its format and version."""
    path = export_dir / METADATA_FILE
    if not path.is_file():
        raise ExportError(
            f"{export_dir}: no {METADATA_FILE} (not an ONNX export; write one with "
            f"`visionmtl export CHECKPOINT --format onnx --out {export_dir}`)"
        )
    try:
        metadata = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != EXPORT_FORMAT:
        raise ExportError(f'{path}: not a visionmtl ONNX export (no "format": "{EXPORT_FORMAT}")')
    if metadata.get("version") != EXPORT_VERSION:
        raise ExportError(
            f"{path}: export version {metadata.get('version')}, this visionmtl reads version "
            f"{EXPORT_VERSION}; export the checkpoint again"
        )
    return metadata


def _session(path: Path, num_threads: int | None) -> Any:
    """An ONNX Runtime CPU session of ``path``."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "OnnxPredictor needs onnxruntime: pip install 'visionmtl[export]'"
        ) from None
    if not path.is_file():
        raise ExportError(f"{path}: missing (model.json names it); export the checkpoint again")
    options = onnxruntime.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
