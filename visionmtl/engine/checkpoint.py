"""Checkpoints: plain tensors and data only (``torch.load(weights_only=True)``), written atomically."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from visionmtl.config import (
    BackboneConfig,
    Config,
    DataConfig,
    ModelConfig,
    config_from_dict,
    config_from_yaml,
    config_to_yaml,
    split_legacy_class_lists,
)
from visionmtl.data.transforms import MEAN, STD
from visionmtl.errors import CheckpointError, VisionMTLError
from visionmtl.structures import ClassSpec

# 2: the class lists moved from the config (model.num_classes, class_names, category_ids) to
# their own "classes" entry; version 1 files still load.
# 3: the config holds the backbone-dependent values resolved (data.mean/std, model.backbone.
# freeze_bn/freeze_at; frozen BatchNorm has no num_batches_tracked); in older files they are null
# and mean ImageNet statistics and nothing frozen.
FORMAT_VERSION = 3


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch as tensors / plain data."""
    numpy_state = np.random.get_state()
    state = {
        "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64),
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (tensors may come back on any device)."""
    state = {k: [t.cpu() for t in v] if isinstance(v, list) else v for k, v in state.items()}
    state = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, cfg: Config, model: torch.nn.Module, **extra: Any) -> None:
    """Write ``{format_version, config (YAML text), classes, model, **extra}`` atomically: a
    temporary file in the same folder, fsync, then ``os.replace``, so a crash never leaves a
    half-written file. ``classes`` is ``model.classes`` (:class:`ClassSpec`) as plain lists. The
    config's backbone-dependent nulls are written resolved, as ``build_model`` resolved them
    (``resolve_backbone_defaults``; training passes them resolved already)."""
    from visionmtl.models.backbone import resolve_backbone_defaults

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = getattr(model, "classes", None)
    if classes is None:
        raise CheckpointError(f"{path}: the model has no classes (build it with build_model)")
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config_to_yaml(resolve_backbone_defaults(cfg)),
        "classes": classes.to_dict(),
        "model": model.state_dict(),
        **extra,
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Config, dict[str, Any]]:
    """Load a checkpoint safely; returns its config and the raw dict (see :func:`checkpoint_classes`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from error
    if not isinstance(payload, dict) or "config" not in payload or "model" not in payload:
        raise CheckpointError(f"{path}: not a visionmtl checkpoint (no 'config'/'model' entries)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer visionmtl (format {payload['format_version']})"
        )
    if payload.get("format_version", 0) < 2:
        return _unrecorded_as_trained(_upgrade_version_1(payload, path)), payload
    cfg = config_from_yaml(payload["config"], source=str(path))
    return _unrecorded_as_trained(cfg), payload


def _unrecorded_as_trained(cfg: Config) -> Config:
    """A config's null data.mean/std and model.backbone.freeze_bn/freeze_at (a checkpoint of
    format < 3, written before training resolved them) as those models were trained: ImageNet
    statistics, nothing frozen. Not resolved from the backbone, whose statistics may differ."""
    from visionmtl.models.backbone import fill_backbone_defaults

    before_format_3 = Config(
        model=ModelConfig(backbone=BackboneConfig(freeze_bn=False, freeze_at=0)),
        data=DataConfig(mean=list(MEAN), std=list(STD)),
    )
    return fill_backbone_defaults(cfg, before_format_3)


def _upgrade_version_1(payload: dict[str, Any], path: Path) -> Config:
    """A version 1 checkpoint kept its class lists in the config's ``model`` section: move them
    into ``payload["classes"]`` and read the rest of the config."""
    try:  # written by our own dumper: plain YAML
        data, legacy = split_legacy_class_lists(yaml.safe_load(payload["config"]) or {})
        own_sem = ((data.get("model") or {}).get("sem") or {}).get("class_names") or ()
        names, ids = legacy.get("class_names"), legacy.get("category_ids")
        if names and ids:
            payload["classes"] = ClassSpec.from_data(names, ids, own_sem).to_dict()
        elif legacy.get("num_classes"):  # built from ModelConfig(num_classes=N) alone
            payload["classes"] = ClassSpec.numbered(legacy["num_classes"], own_sem).to_dict()
    except (yaml.YAMLError, AttributeError, VisionMTLError) as error:
        raise CheckpointError(
            f"{path}: format 1 checkpoint with an unreadable config ({error})"
        ) from None
    return config_from_dict(data, source=str(path))


def checkpoint_classes(payload: dict[str, Any], path: str | Path) -> ClassSpec:
    """The :class:`ClassSpec` a checkpoint's model was trained with."""
    if "classes" not in payload:
        raise CheckpointError(f"{path}: holds no class lists (not a trained visionmtl model)")
    return ClassSpec.from_dict(payload["classes"])


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Config]:
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode).

    No backbone weights are fetched: the checkpoint holds all of them. ``model.classes`` is the
    checkpoint's :class:`ClassSpec`."""
    from dataclasses import replace

    from visionmtl.models import build_model

    cfg, payload = load_checkpoint(path, map_location=device)
    classes = checkpoint_classes(payload, path)
    backbone = replace(cfg.model.backbone, pretrained=False, weights=None)
    model_cfg = replace(cfg.model, backbone=backbone)
    model = build_model(model_cfg, classes, cfg.eval, sharing=cfg.mtl.sharing)
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.to(device).eval(), cfg
