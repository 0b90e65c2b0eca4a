"""Checkpoints: plain tensors and data only (``torch.load(weights_only=True)``), written atomically."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionmtl.config import Config, config_from_yaml, config_to_yaml
from visionmtl.errors import CheckpointError

FORMAT_VERSION = 1


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
    """Write ``{format_version, config (YAML text), model, **extra}`` atomically: a temporary file in
    the same folder, fsync, then ``os.replace``, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config_to_yaml(cfg),
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
    """Load a checkpoint safely; returns its config and the raw dict."""
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
    return config_from_yaml(payload["config"], source=str(path)), payload


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Config]:
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode).

    No backbone weights are fetched: the checkpoint holds all of them."""
    from dataclasses import replace

    from visionmtl.models import build_model

    cfg, payload = load_checkpoint(path, map_location=device)
    backbone = replace(cfg.model.backbone, pretrained=False, weights=None)
    model = build_model(replace(cfg.model, backbone=backbone), cfg.eval, sharing=cfg.mtl.sharing)
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.to(device).eval(), cfg
