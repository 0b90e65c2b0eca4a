"""timm backbone that returns the feature maps at chosen strides, and the settings that depend on
the backbone (input statistics, frozen BatchNorm and stages), resolved once per run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_data_config
from timm.layers import freeze_batch_norm_2d
from timm.models import PretrainedCfg, get_pretrained_cfg
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from visionmtl.config import Config, ModelConfig
from visionmtl.errors import BackboneError

RGB = tuple[float, float, float]


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


def input_normalization(cfg: Config) -> tuple[RGB, RGB]:
    """The run's input ``mean``, ``std`` (RGB, on pixels / 255): ``data.mean`` / ``data.std``, or
    where null the statistics timm declares for the weights of ``model.backbone.name`` (its
    pretrained_cfg: the name's tag, else the default tag; e.g. 0.5 for Inception-style and BiT
    weights, CLIP's for CLIP weights). No model is built."""
    mean, std = cfg.data.mean, cfg.data.std
    if mean is None or std is None:
        name = cfg.model.backbone.name
        if not timm.is_model(name):
            if ":" in name:  # hf-hub:..., local-dir:...: the statistics are in the hub's files
                raise BackboneError(
                    f"model.backbone.name: timm's registry has no input statistics for '{name}'; "
                    "set data.mean and data.std"
                )
            raise BackboneError(f"unknown timm model '{name}' (model.backbone.name)")
        try:
            pretrained_cfg = get_pretrained_cfg(name) or PretrainedCfg()  # none: timm's defaults
        except RuntimeError as error:  # a tag the architecture does not have
            raise BackboneError(f"model.backbone.name: {error}") from None
        declared = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict())
        mean = declared["mean"] if mean is None else mean
        std = declared["std"] if std is None else std
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)  # type: ignore[return-value]


def backbone_freezing(model: ModelConfig) -> tuple[bool, int]:
    """``model.backbone``'s ``(freeze_bn, freeze_at)``, nulls resolved: when weights are loaded
    (``pretrained``, ``weights`` or ``model.init_from``) frozen BatchNorm and the stem + first
    stage frozen, as torchvision's detection models with trained weights (FrozenBatchNorm2d,
    trainable_backbone_layers=3); from scratch nothing frozen."""
    backbone = model.backbone
    loaded = bool(backbone.pretrained or backbone.weights or model.init_from)
    freeze_bn = loaded if backbone.freeze_bn is None else backbone.freeze_bn
    freeze_at = (2 if loaded else 0) if backbone.freeze_at is None else backbone.freeze_at
    return freeze_bn, freeze_at


def resolve_backbone_defaults(cfg: Config) -> Config:
    """``cfg`` with the nulls that depend on the backbone filled in: ``data.mean`` / ``data.std``
    (:func:`input_normalization`), ``model.backbone.freeze_bn`` / ``freeze_at``
    (:func:`backbone_freezing`). Training resolves them once at the start and stores them in
    ``config.yaml`` and the checkpoints, so a model rebuilt without weights (``load_model``) has
    the same modules and preprocessing."""
    mean, std = input_normalization(cfg)
    freeze_bn, freeze_at = backbone_freezing(cfg.model)
    backbone = replace(cfg.model.backbone, freeze_bn=freeze_bn, freeze_at=freeze_at)
    return replace(
        cfg,
        model=replace(cfg.model, backbone=backbone),
        data=replace(cfg.data, mean=list(mean), std=list(std)),
    )


def fill_backbone_defaults(cfg: Config, source: Config) -> Config:
    """``cfg`` whose null ``data.mean`` / ``data.std`` / ``model.backbone.freeze_bn`` /
    ``freeze_at`` take ``source``'s values (e.g. those of the run being resumed)."""

    def pick(value: Any, fallback: Any) -> Any:
        return fallback if value is None else value

    data, backbone = cfg.data, cfg.model.backbone
    data = replace(
        data, mean=pick(data.mean, source.data.mean), std=pick(data.std, source.data.std)
    )
    backbone = replace(
        backbone,
        freeze_bn=pick(backbone.freeze_bn, source.model.backbone.freeze_bn),
        freeze_at=pick(backbone.freeze_at, source.model.backbone.freeze_at),
    )
    return replace(cfg, data=data, model=replace(cfg.model, backbone=backbone))


def _module_of_level(names: list[str], module: str) -> str | None:
    """The body's name for a feature_info module: as is (hooks), flattened as FeatureListNet does
    (``stages.0`` -> ``stages_0``) or inside a wrapper (FeatureGetterNet: ``model.blocks.9``)."""
    for candidate in (module, module.replace(".", "_", 1)):
        if candidate in names:
            return candidate
    return next((name for name in names if name.endswith("." + module)), None)


def freeze_levels(body: nn.Module, levels: list[dict], freeze_at: int, name: str) -> str:
    """Freeze what computes the first ``freeze_at`` feature levels of ``body``: parameters without
    gradient, BatchNorm frozen (as Detectron2's ``freeze``). Returns the name of the last level
    frozen: its module, or "stem".

    Levels count from the stem (Detectron2's freeze_at: 1 the stem, 2 the stem and the first
    stage): timm's ``feature_info`` levels, with the stem as a level of its own where timm's
    first level already includes a stage (ConvNeXt, Swin: stride 4). Level k is everything
    registered up to the end of its feature_info module: timm models register their modules in
    the order they run, stem first."""
    names = [module_name for module_name, _ in body.named_modules()]  # depth-first; "" is body
    stem_level = levels[0]["reduction"] > 2
    if freeze_at > len(levels) + stem_level:
        raise BackboneError(
            f"model.backbone.freeze_at: {freeze_at}, but '{name}' has "
            f"{len(levels) + stem_level} levels (stem and stages) up to the deepest stride in "
            f"model.backbone.out_strides ({levels[-1]['reduction']})"
        )
    level = levels[max(freeze_at - 1 - stem_level, 0)]["module"]
    module = _module_of_level(names, level)
    if module is None:
        raise BackboneError(
            f"model.backbone.freeze_at: feature level '{level}' of '{name}' is no module of the "
            "backbone, so its stages cannot be frozen; set model.backbone.freeze_at: 0"
        )
    if stem_level and freeze_at == 1:  # the stem: what is registered before the first level
        end = names.index(module) - 1
    else:
        end = max(i for i, n in enumerate(names) if n == module or n.startswith(module + "."))
    for module_name in names[1 : end + 1]:
        frozen = body.get_submodule(module_name)
        for parameter in frozen.parameters(recurse=False):
            parameter.requires_grad_(False)
        if isinstance(frozen, _BatchNorm):
            parent, _, child = module_name.rpartition(".")
            setattr(body.get_submodule(parent), child, freeze_batch_norm_2d(frozen))
    return "stem" if stem_level and freeze_at == 1 else module


class TimmBackbone(nn.Module):
    """Any timm model as a multi-level feature extractor.

    Levels are picked by their stride (``feature_info.reduction()``), never by position, so the
    same config works for resnets, mobilenets, efficientnets and convnexts.

    Args:
        name: timm model name, e.g. ``"resnet18"``.
        out_strides: strides of the returned levels, ascending, e.g. ``[8, 16, 32]``.
        pretrained: download ImageNet weights from the timm hub.
        weights: path to a local state dict in timm's key layout (used instead of the hub).
        freeze_bn: every BatchNorm frozen (timm's ``freeze_batch_norm_2d``: statistics and affine
            parameters fixed buffers; BatchNorm + activation layers keep their activation).
        freeze_at: levels frozen from the stem (:func:`freeze_levels`; 0: none).
    """

    def __init__(
        self,
        name: str,
        out_strides: list[int],
        pretrained: bool = False,
        weights: str | None = None,
        freeze_bn: bool = False,
        freeze_at: int = 0,
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
        self.freeze_bn, self.freeze_at = freeze_bn, freeze_at
        # The body ends at the deepest level asked for: only levels up to it can be frozen.
        levels = probe.feature_info.info[: max(out_indices) + 1]
        self.frozen_through = freeze_levels(self.body, levels, freeze_at, name) if freeze_at else ""
        if freeze_bn:
            self.body = freeze_batch_norm_2d(self.body)

    def describe_freezing(self) -> str:
        """One phrase for the start-up summary: what of the backbone is frozen."""
        norm = "BatchNorm frozen" if self.freeze_bn else "BatchNorm trained"
        if not self.freeze_at:
            return f"{norm}, no stage frozen"
        fixed = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        return (
            f"{norm}, levels 1-{self.freeze_at} frozen (up to {self.frozen_through}, "
            f"{fixed:,} parameters)"
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [B, 3, H, W] -> one map [B, C_l, H / s_l, W / s_l] per requested stride."""
        return self.body(images)
