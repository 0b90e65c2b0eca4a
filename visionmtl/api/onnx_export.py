"""ONNX export of a trained model: ``model.onnx``, ``mask_head.onnx`` and ``model.json``.

``model.onnx`` is the network up to the heads' raw outputs (``MultiTaskModel.raw_outputs``):
input ``images`` [B, 3, H, W] float32, normalised, B and H, W (multiples of ``SIZE_DIVISOR``)
free. ``mask_head.onnx`` (models with ``inst``) is the mask head on the detected boxes:
inputs ``rois`` [R, 5] and the pyramid maps ``mask_features_*``, RoIAlign inside, output
``mask_logits``. ``model.json`` holds what inference needs beside them: input size and
normalisation, classes and the post-processing settings (thresholds, semantic stride). Decoding,
NMS, mask pasting and resizing are not in the graphs: ``OnnxPredictor`` runs the same Python
post-processing as ``Predictor`` (``visionmtl.models.postprocess``).

Exporter: the TorchScript-based one (``torch.onnx.export(..., dynamo=False)``). With torch 2.14
the ``torch.export``-based one (``dynamo=True``) took ~10x longer and its graph failed in ONNX
Runtime at other sizes than the example's (the coarse P6/P7 map sizes were baked in); the
TorchScript trace keeps batch and image size dynamic and agrees with PyTorch to ~1e-5.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionmtl.config import Config
from visionmtl.data import SIZE_DIVISOR
from visionmtl.engine.checkpoint import load_model
from visionmtl.errors import ExportError, OutputExistsError
from visionmtl.models.backbone import input_normalization
from visionmtl.models.postprocess import (
    DET_OUTPUTS,
    PostprocessSettings,
    mask_feature_name,
    mask_features,
)

NETWORK_FILE = "model.onnx"
MASK_HEAD_FILE = "mask_head.onnx"
METADATA_FILE = "model.json"
EXPORT_FILES = (NETWORK_FILE, MASK_HEAD_FILE, METADATA_FILE)
EXPORT_FORMAT = "visionmtl-onnx"
EXPORT_VERSION = 1
OPSET = 17  # RoiAlign with half-pixel coordinates (torchvision's aligned=True) needs >= 16


class _Network(nn.Module):
    """``raw_outputs`` as a tuple (the exporter's output list), in ``names`` order."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        raw = self.model.raw_outputs(images)
        return tuple(raw[name] for name in self.names)


class _MaskHead(nn.Module):
    """``MultiTaskModel.mask_logits`` with the pyramid maps as separate inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, rois: Tensor, *features: Tensor) -> Tensor:
        return self.model.mask_logits(list(features), rois)


def export_onnx(checkpoint: str | Path, out_dir: str | Path, opset: int = OPSET) -> dict[str, Path]:
    """Export the model of ``checkpoint`` into ``out_dir`` (created if needed); returns file
    name -> path of what was written. Refuses (``OutputExistsError``, before loading anything)
    where ``out_dir`` holds any file of an export: nothing written is ever replaced."""
    out_dir = Path(out_dir)
    _check_fresh(out_dir)
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
    except ImportError:
        raise ExportError(
            "ONNX export needs the onnx package: pip install 'visionmtl[export]'"
        ) from None
    model, cfg = load_model(checkpoint, device="cpu")
    network, names = network_onnx(model, opset)
    files = {NETWORK_FILE: network}
    if "inst" in model.heads:
        files[MASK_HEAD_FILE] = mask_head_onnx(model, opset)
    metadata = export_metadata(model, cfg, names, opset)
    files[METADATA_FILE] = (json.dumps(metadata, indent=2) + "\n").encode()
    return _write_files(out_dir, files)


def _write_files(out_dir: Path, files: dict[str, bytes]) -> dict[str, Path]:
    """Write ``files`` (name -> bytes) into ``out_dir``, none replacing an existing file; where
    one cannot be written, the ones written before it are removed again (an export is whole or
    absent), then the error is raised."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    try:
        for name, data in files.items():
            path = out_dir / name
            try:
                with open(path, "xb") as file:  # exclusive: a file made meanwhile is not replaced
                    written[name] = path  # made by this call from here on
                    file.write(data)
            except FileExistsError:
                raise OutputExistsError(_exists_message(path)) from None
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    return written


def _check_fresh(out_dir: Path) -> None:
    existing = next(path for path in (out_dir, *out_dir.absolute().parents) if path.exists())
    if not existing.is_dir():  # --out, or a folder it would be made in, is a file
        raise OutputExistsError(
            f"{existing} exists and is not a directory; choose another --out directory"
        )
    for name in EXPORT_FILES:
        if (out_dir / name).exists():
            raise OutputExistsError(_exists_message(out_dir / name))


def _exists_message(path: Path) -> str:
    return f"{path} exists already (an earlier export); choose another --out directory"


def _example_images() -> Tensor:
    """A traced example [2, 3, 64, 96]: batch, height and width all different, so that the
    trace cannot confuse one dynamic size with another."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 2 * SIZE_DIVISOR, 3 * SIZE_DIVISOR, generator=generator)


def network_onnx(model: nn.Module, opset: int = OPSET) -> tuple[bytes, list[str]]:
    """The network of ``model`` (eval mode, CPU) as ONNX bytes, and its output names."""
    images = _example_images()
    with torch.no_grad():
        names = list(model.raw_outputs(images))
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}}
    for name in names:
        if name in DET_OUTPUTS:  # P: the FCOS points of every level, [P, ...] or [B, P, ...]
            dynamic[name] = {0: "points"} if name.startswith("point") else {0: "batch", 1: "points"}
        else:  # sem_logits and the mask head's pyramid maps [B, C, H/s, W/s]
            dynamic[name] = {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
    return _export(_Network(model, names), (images,), ["images"], names, dynamic, opset), names


def mask_head_onnx(model: nn.Module, opset: int = OPSET) -> bytes:
    """The mask head of ``model`` as ONNX bytes: ``rois`` [R, 5] (image index, x0, y0, x1, y1 in
    input pixels) and ``mask_features_*`` [B, C, H/s, W/s] -> ``mask_logits`` [R, C', M, M]."""
    images = _example_images()
    with torch.no_grad():
        raw = model.raw_outputs(images)
    features = mask_features(raw)
    # Boxes from small to large (every RoI is pooled from every level; sizes only pick one).
    rois = torch.tensor(
        [[0, 4, 4, 20, 20], [1, 8, 2, 90, 60], [0, 0, 0, 96, 64], [1, -200, -200, 300, 300]],
        dtype=torch.float32,
    )
    feature_names = [mask_feature_name(level) for level in range(len(features))]
    dynamic: dict[str, dict[int, str]] = {"rois": {0: "rois"}, "mask_logits": {0: "rois"}}
    for name in feature_names:
        dynamic[name] = {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
    inputs = ["rois", *feature_names]
    return _export(_MaskHead(model), (rois, *features), inputs, ["mask_logits"], dynamic, opset)


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter's deprecation notice and its tracer's notes on constants
        # (the FCOS size ranges, used in training only) say nothing about this graph.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module.eval(),
            args,
            buffer,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    return buffer.getvalue()


def export_metadata(
    model: nn.Module, cfg: Config, output_names: list[str], opset: int = OPSET
) -> dict[str, Any]:
    """model.json: what ``OnnxPredictor`` needs besides the graphs (plain JSON data, every key
    read and checked by ``read_metadata``), and ``opset`` and ``torch`` for the record."""
    mean, std = input_normalization(cfg)
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "network": NETWORK_FILE,
        "mask_head": MASK_HEAD_FILE if "inst" in model.heads else None,
        "outputs": output_names,
        "input": {
            "image_size": cfg.data.image_size,
            "size_divisor": SIZE_DIVISOR,
            "mean": list(mean),
            "std": list(std),
        },
        "classes": model.classes.to_dict(),
        "postprocess": PostprocessSettings.from_model(model).to_dict(),
        "batch_size": cfg.eval.batch_size,
        "opset": opset,
        "torch": torch.__version__,
    }
