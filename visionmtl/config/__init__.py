"""Experiment configuration: nested dataclasses with per-field rules, loaded from YAML.

:mod:`visionmtl.config.schema` is the schema (every field, its type, rule and meaning);
:mod:`visionmtl.config.loading` reads YAML, applies ``--set`` overrides and words the errors.
"""

from visionmtl.config.loading import (
    apply_overrides,
    config_from_dict,
    config_from_yaml,
    config_to_dict,
    config_to_yaml,
    load_config,
    save_config,
    split_legacy_class_lists,
)
from visionmtl.config.schema import (
    AMP_MODES,
    GRAD_TARGETS,
    LOGGERS,
    MTL_METHODS,
    MTL_SHARING,
    NAN_POLICIES,
    ON_INVALID,
    OPTIMIZERS,
    BackboneConfig,
    Config,
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
from visionmtl.errors import ConfigError
from visionmtl.structures import TASKS

__all__ = [
    "AMP_MODES",
    "GRAD_TARGETS",
    "LOGGERS",
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
    "split_legacy_class_lists",
]
