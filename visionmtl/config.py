"""Experiment configuration: nested dataclasses loaded from YAML, with dotted command-line overrides.

A config file mirrors :class:`Config` (``model``, ``data``, ``train``, ``eval``, ``mtl``); keys that are
left out keep their defaults, unknown keys are errors naming the nearest valid key. Overrides such as
``train.epochs=3`` or ``model.tasks=[det,sem]`` are applied on top; the value is parsed as YAML, except
for string fields, which keep the raw text (so ``train.amp=off`` stays ``"off"``).

This is the module to import from. The schema (choices, dataclasses, :class:`ConfigError`) is in
:mod:`visionmtl.config_schema`; loading, validation and overrides in the private
``_config_loader``, ``_config_convert`` and ``_config_rules``.
"""

from visionmtl._config_loader import (
    apply_overrides,
    config_from_dict,
    config_from_yaml,
    config_to_dict,
    config_to_yaml,
    load_config,
    save_config,
)
from visionmtl.config_schema import (
    AMP_MODES,
    GRAD_TARGETS,
    MTL_METHODS,
    MTL_SHARING,
    NAN_POLICIES,
    ON_INVALID,
    OPTIMIZERS,
    TASKS,
    BackboneConfig,
    Config,
    ConfigError,
    DataConfig,
    DetConfig,
    EvalConfig,
    InstConfig,
    ModelConfig,
    MtlConfig,
    SemConfig,
    SourceConfig,
    TrainConfig,
)

__all__ = [
    "AMP_MODES",
    "GRAD_TARGETS",
    "MTL_METHODS",
    "MTL_SHARING",
    "NAN_POLICIES",
    "ON_INVALID",
    "OPTIMIZERS",
    "TASKS",
    "BackboneConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DetConfig",
    "EvalConfig",
    "InstConfig",
    "ModelConfig",
    "MtlConfig",
    "SemConfig",
    "SourceConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_from_yaml",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "save_config",
]
