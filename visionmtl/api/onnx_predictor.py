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
from visionmtl.evaluation.validation import eval_transform_for
from visionmtl.models.postprocess import (
    DET_OUTPUTS,
    SEM_OUTPUT,
    MaskLogitsFn,
    PostprocessSettings,
    mask_feature_name,
)
from visionmtl.structures import ClassSpec


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
        *,
        score_thresh: float | None = None,
        batch_size: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.export_dir = Path(export_dir)
        self.metadata = read_metadata(self.export_dir)
        self.settings = PostprocessSettings.from_dict(self.metadata["postprocess"])
        source = self.metadata["input"]
        if score_thresh is None:  # a model without det has no threshold: nothing to drop
            score_thresh = self.settings.score_thresh if "det" in self.settings.tasks else 0.0
        super().__init__(
            ClassSpec.from_dict(self.metadata["classes"]),
            eval_transform_for(source["image_size"], source["mean"], source["std"]),
            score_thresh,
            self.metadata["batch_size"] if batch_size is None else batch_size,
        )
        self.output_names = list(self.metadata["outputs"])
        network_path = self.export_dir / self.metadata["network"]
        self.network = _session(network_path, num_threads)
        graph_outputs = [output.name for output in self.network.get_outputs()]
        if sorted(graph_outputs) != sorted(self.output_names):
            raise ExportError(
                f'{self.export_dir / METADATA_FILE}: "outputs" {self.output_names} are not the '
                f"outputs of {network_path.name} {graph_outputs}; export the checkpoint again"
            )
        mask_head = self.metadata["mask_head"]
        self.mask_head = _session(self.export_dir / mask_head, num_threads) if mask_head else None

    @classmethod
    def from_export(
        cls,
        path: str | Path,
        *,
        score_thresh: float | None = None,
        batch_size: int | None = None,
        num_threads: int | None = None,
    ) -> OnnxPredictor:
        """Load an export directory written by ``visionmtl export`` (no checkpoint needed)."""
        return cls(path, score_thresh=score_thresh, batch_size=batch_size, num_threads=num_threads)

    def postprocess_settings(self) -> PostprocessSettings:
        """The settings saved in ``model.json``."""
        return self.settings

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
        arrays = self.network.run(self.output_names, {"images": images.float().cpu().numpy()})
        return {
            name: torch.from_numpy(array)
            for name, array in zip(self.output_names, arrays, strict=True)
        }

    def mask_logits(self, features: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """``mask_head.onnx`` on ``rois`` [R, 5] over the pyramid maps -> [R, C, M, M]."""
        feed = {"rois": rois.float().numpy()}
        feed.update({mask_feature_name(level): f.numpy() for level, f in enumerate(features)})
        return torch.from_numpy(self.mask_head.run(None, feed)[0])

    def _network(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], MaskLogitsFn | None]:
        """``model.onnx``'s outputs and ``mask_head.onnx`` in ONNX Runtime."""
        return self.raw_outputs(images), self.mask_logits if self.mask_head is not None else None


def read_metadata(export_dir: Path) -> dict[str, Any]:
    """``model.json`` of an export directory, checked: its format and version, and every key
    inference reads, with its type (``ExportError`` naming the file and the key)."""
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
    _check_metadata(metadata, path)
    return metadata


def _check_metadata(metadata: dict[str, Any], path: Path) -> None:
    """The keys and types of ``model.json`` that inference reads (see ``export_metadata``)."""
    _require(metadata, "network", str, path)
    _require(metadata, "mask_head", (str, type(None)), path)
    _require(metadata, "batch_size", int, path, positive=True)
    source = _require(metadata, "input", dict, path)
    _require(source, "image_size", int, path, "input.", positive=True)
    _require(source, "size_divisor", int, path, "input.", positive=True)
    for key in ("mean", "std"):
        values = _require(source, key, list, path, "input.")
        if len(values) != 3 or not all(_is_number(value) for value in values):
            raise ExportError(f'{path}: "input.{key}" is {values!r}, expected 3 numbers (RGB)')
    try:
        ClassSpec.from_dict(_require(metadata, "classes", dict, path))
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f'{path}: "classes" cannot be read ({error!r})') from None
    try:
        settings = PostprocessSettings.from_dict(_require(metadata, "postprocess", dict, path))
    except ValueError as error:
        raise ExportError(f'{path}: "postprocess": {error}') from None
    if ("inst" in settings.tasks) != (metadata["mask_head"] is not None):
        raise ExportError(
            f'{path}: "mask_head" is {metadata["mask_head"]!r} but the tasks are '
            f"{list(settings.tasks)} (a mask head goes with 'inst' only)"
        )
    outputs = _require(metadata, "outputs", list, path)
    needed = {"det": list(DET_OUTPUTS), "sem": [SEM_OUTPUT], "inst": [mask_feature_name(0)]}
    missing = [name for task in settings.tasks for name in needed[task] if name not in outputs]
    if missing or not all(isinstance(name, str) for name in outputs):
        raise ExportError(
            f'{path}: "outputs" {outputs!r} lacks {missing} (tasks {list(settings.tasks)})'
        )


def _require(
    section: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    path: Path,
    where: str = "",
    positive: bool = False,
) -> Any:
    """``section[key]``, an ExportError naming ``path`` and the key where it is missing or not a
    ``kind`` (a JSON true/false is no int), or not > 0 with ``positive``."""
    if key not in section:
        raise ExportError(f'{path}: no "{where}{key}"; export the checkpoint again')
    value = section[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (
        not isinstance(value, kinds)
        or (isinstance(value, bool) and bool not in kinds)
        or (positive and value <= 0)
    ):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        expected = f"a positive {names}" if positive else names
        raise ExportError(f'{path}: "{where}{key}" is {value!r}, expected {expected}')
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime's errors (InvalidProtobuf, ...) share no other base
        raise ExportError(
            f"{path}: not a readable ONNX graph ({error}); export the checkpoint again"
        ) from None
