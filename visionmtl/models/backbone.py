"""timm backbone that returns the feature maps at chosen strides."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from visionmtl.errors import BackboneError


def _select_indices(info: list[dict], strides: list[int], name: str) -> list[int]:
    """Index (into timm's feature_info) of the deepest level of each requested stride."""
    indices = []
    for stride in strides:
        matches = [i for i, level in enumerate(info) if level["reduction"] == stride]
        if not matches:
            available = sorted({level["reduction"] for level in info})
            raise BackboneError(
                f"backbone '{name}' has no feature level with stride {stride}; "
                f"available strides: {available} (set model.backbone.out_strides)"
            )
        indices.append(matches[-1])
    return indices


class TimmBackbone(nn.Module):
    """Any timm model as a multi-level feature extractor.

    Levels are picked by their stride (``feature_info.reduction()``), never by position, so the
    same config works for resnets, mobilenets, efficientnets and convnexts.

    Args:
        name: timm model name, e.g. ``"resnet18"``.
        out_strides: strides of the returned levels, ascending, e.g. ``[8, 16, 32]``.
        pretrained: download ImageNet weights from the timm hub.
        weights: path to a local state dict in timm's key layout (used instead of the hub).
    """

    def __init__(
        self,
        name: str,
        out_strides: list[int],
        pretrained: bool = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        try:
            # Built for its feature_info only. Not on the meta device: this probe's random init
            # advances the RNG before the real model is built, and a meta probe (tried) changes
            # every seed's initialisation and so every result (demo box AP50 0.944 -> 0.906).
            probe = timm.create_model(name, pretrained=False, features_only=True)
        except RuntimeError as error:  # timm raises RuntimeError for unknown names
            raise BackboneError(
                f"unknown timm model '{name}' (model.backbone.name): {error}"
            ) from error
        out_indices = _select_indices(probe.feature_info.info, list(out_strides), name)
        kwargs: dict = {"features_only": True, "out_indices": tuple(out_indices)}
        if weights is not None:
            if not Path(weights).is_file():
                raise BackboneError(f"model.backbone.weights: file not found: {weights}")
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
        else:
            kwargs["pretrained"] = pretrained
        try:
            self.body = timm.create_model(name, **kwargs)
        except Exception as error:  # hub offline, corrupt file, key mismatch
            raise BackboneError(
                f"could not load pretrained weights for '{name}': {error}. Without internet, "
                "download the weights elsewhere and set model.backbone.weights: PATH "
                "(a timm-layout state dict), or set model.backbone.pretrained: false"
            ) from error
        self.strides = [int(r) for r in self.body.feature_info.reduction()]
        self.channels = [int(c) for c in self.body.feature_info.channels()]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [B, 3, H, W] -> one map [B, C_l, H / s_l, W / s_l] per requested stride."""
        return self.body(images)
