"""Mixed precision: autocast contexts and the gradient scaler for fp16."""

from __future__ import annotations

import contextlib
import warnings

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast for ``amp`` in {"off", "bf16", "fp16"} on ``device``.

    fp16 on CPU is not supported by the CPU kernels we need, so it falls back to bf16 with a warning."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = _DTYPES[amp]
    if device.type == "cpu" and dtype is torch.float16:
        warnings.warn("train.amp=fp16 is CUDA-only; using bf16 autocast on CPU", stacklevel=2)
        dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def inference_precision(device: torch.device, amp: str) -> str:
    """The precision inference runs in for ``eval.amp`` on ``device``: "fp32", "bf16" or "fp16"
    (mixed precision only on CUDA: on CPU fp32 is both exact and faster, no native bf16), or
    "tf32" where CUDA runs fp32 convolutions in TF32 (PyTorch's default cudnn.allow_tf32)."""
    if device.type != "cuda":
        return "fp32"
    if amp != "off":
        return amp
    return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"


def inference_autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast for inference with ``eval.amp`` (see :func:`inference_precision`)."""
    precision = inference_precision(device, amp)
    return (
        autocast(device, precision) if precision in ("bf16", "fp16") else contextlib.nullcontext()
    )


def make_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 on CUDA (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16" and device.type == "cuda"))
