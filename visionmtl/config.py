"""Experiment configuration: nested dataclasses loaded from YAML, with dotted command-line overrides.

A config file mirrors :class:`Config` (``model``, ``data``, ``train``, ``eval``, ``mtl``); keys that are
left out keep their defaults, unknown keys are errors naming the nearest valid key. Overrides such as
``train.epochs=3`` or ``model.tasks=[det,sem]`` are applied on top; the value is parsed as YAML, except
for string fields, which keep the raw text (so ``train.amp=off`` stays ``"off"``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, overload

import yaml

# Valid choices live here, once; code elsewhere maps these names to behaviour with plain dicts.
TASKS: tuple[str, ...] = ("det", "sem", "inst")
AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
MTL_METHODS: tuple[str, ...] = ("fixed", "uncertainty", "dwa", "gradnorm", "pcgrad", "cagrad")
MTL_SHARING: tuple[str, ...] = ("hard", "adapters")
GRAD_TARGETS: tuple[str, ...] = ("params", "features")
ON_INVALID: tuple[str, ...] = ("error", "skip", "fix")
NAN_POLICIES: tuple[str, ...] = ("stop", "skip")
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
_YAML_NULLS = frozenset({"null", "Null", "NULL", "~"})


class ConfigError(ValueError):
    """A config file, dict or override is invalid; the message names the source and the key."""


@dataclass
class BackboneConfig:
    name: str = "resnet18"
    pretrained: bool = False
    weights: str | None = None
    out_strides: list[int] = field(default_factory=lambda: [8, 16, 32])


@dataclass
class DetConfig:
    num_convs: int = 2
    center_sampling_radius: float = 1.5


@dataclass
class SemConfig:
    channels: int = 64


@dataclass
class InstConfig:
    """Mask R-CNN style mask head (RoIAlign on the pyramid, small FCN, 2 * roi_size masks)."""

    roi_size: int = 14
    channels: int = 128
    num_convs: int = 4
    class_agnostic: bool = False


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    tasks: list[str] = field(default_factory=lambda: ["det", "sem"])
    fpn_channels: int = 128
    det: DetConfig = field(default_factory=DetConfig)
    sem: SemConfig = field(default_factory=SemConfig)
    inst: InstConfig = field(default_factory=InstConfig)
    # The last three are filled from the data set at training time.
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)


@dataclass
class SourceConfig:
    """One extra training source and the tasks it labels (targets of other tasks are left out).

    A COCO source sets ``ann`` (JSON) and ``images``; its category names must be among the main
    set's. A semantic PNG source sets ``images`` and ``sem_masks`` (one PNG class map per image,
    same file stem; 0 background, k = ``class_names[k - 1]``, 255 ignore) and labels ``sem`` only.
    """

    ann: str = ""
    images: str = ""
    sem_masks: str = ""
    tasks: list[str] = field(default_factory=lambda: ["det", "sem", "inst"])
    class_names: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    image_size: int = 512
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    hflip_prob: float = 0.5
    color_jitter: float = 0.2
    batch_size: int = 8
    num_workers: int = 2
    on_invalid: str = "skip"  # bad annotations: error (stop before training) | skip | fix
    max_bad_image_fraction: float = 0.01  # stop when more images than this fail to load
    extra_sources: list[SourceConfig] = field(default_factory=list)  # trained beside train_ann


@dataclass
class TrainConfig:
    epochs: int = 12
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_iters: int = 100
    clip_grad_norm: float = 10.0  # 0 disables clipping
    amp: str = "off"
    seed: int = 0
    eval_every: int = 1
    device: str = "auto"
    log_every: int = 20
    output_dir: str = "runs/exp"
    threads: int = 0  # 0 keeps torch's default
    nan_policy: str = "stop"  # non-finite loss: stop (save nan_debug.pt) | skip the step
    max_nan_skips: int = 10  # with nan_policy=skip, stop after this many skipped steps
    checkpoint_every: int = (
        0  # also save last.pt every N steps inside an epoch (0: epoch ends only)
    )
    sync_bn: bool = False  # SyncBatchNorm under torchrun


@dataclass
class EvalConfig:
    score_thresh: float = 0.05
    nms_thresh: float = 0.6
    max_detections: int = 100
    batch_size: int = 8


@dataclass
class MtlConfig:
    method: str = "fixed"
    weights: dict[str, float] = field(default_factory=dict)  # task -> loss weight; missing = 1.0
    sharing: str = "hard"  # hard: shared backbone + FPN; adapters: per-task adapters on the FPN
    grad_on: str = "params"  # gradient methods act on shared parameters or shared features
    dwa_temperature: float = 2.0
    gradnorm_alpha: float = 1.5
    gradnorm_lr: float = 0.025
    cagrad_c: float = 0.4
    log_every: int = 50  # steps between per-task gradient statistics (0: never)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mtl: MtlConfig = field(default_factory=MtlConfig)


# ---------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (plain PyYAML needs ``1.0e-3``)."""


_Loader.yaml_implicit_resolvers = {  # copy the lists: add_implicit_resolver would mutate SafeLoader's
    key: list(resolvers) for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes lists in flow style (``tasks: [det, sem]``) and sections as blocks."""


_Dumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True),
)


def _parse_yaml(text: str, source: str, locate: bool = True) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no object construction
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark and locate else source
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


# ---------------------------------------------------------------- checking values against the schema


def _rule(ok: Callable[[Any], bool], expected: str) -> Callable[[Any], str | None]:
    """A field check: None when ``ok(value)``, else the problem."""
    return lambda value: None if ok(value) else f"expected {expected}, got {value!r}"


def _one_of(choices: Sequence[str]) -> Callable[[Any], str | None]:
    return _rule(lambda value: value in choices, f"one of {', '.join(map(repr, choices))}")


def _distinct_tasks(tasks: list[str]) -> bool:
    # Instance masks are predicted inside detected boxes, so "inst" needs "det".
    distinct = bool(tasks) and set(tasks) <= set(TASKS) and len(set(tasks)) == len(tasks)
    return distinct and ("inst" not in tasks or "det" in tasks)


_POSITIVE = _rule(lambda value: value >= 1, "an int >= 1")
_NON_NEGATIVE = _rule(lambda value: value >= 0, "a number >= 0")
_PROBABILITY = _rule(lambda value: 0 <= value <= 1, "a number in [0, 1]")

# Per-field checks, keyed by dotted path; run whenever that field is set (file, dict or override).
_FIELD_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "model.backbone.out_strides": _rule(
        lambda strides: bool(strides) and strides[0] > 0 and sorted(set(strides)) == strides,
        "a non-empty, strictly increasing list of positive ints",
    ),
    "model.tasks": _rule(
        _distinct_tasks,
        f"a non-empty list of distinct tasks from {list(TASKS)} ('inst' needs 'det')",
    ),
    "model.fpn_channels": _POSITIVE,
    "model.det.num_convs": _NON_NEGATIVE,
    "model.det.center_sampling_radius": _NON_NEGATIVE,
    "model.sem.channels": _POSITIVE,
    "model.inst.roi_size": _POSITIVE,
    "model.inst.channels": _POSITIVE,
    "model.inst.num_convs": _NON_NEGATIVE,
    "model.num_classes": _POSITIVE,
    "data.image_size": _rule(lambda value: value >= 32, "an int >= 32"),
    "data.scale_range": _rule(
        lambda scales: len(scales) == 2 and 0 < scales[0] <= scales[1],
        "two positive numbers [low, high] with low <= high",
    ),
    "data.hflip_prob": _PROBABILITY,
    "data.color_jitter": _NON_NEGATIVE,
    "data.batch_size": _POSITIVE,
    "data.num_workers": _NON_NEGATIVE,
    "train.epochs": _POSITIVE,
    "train.optimizer": _one_of(OPTIMIZERS),
    "train.lr": _rule(lambda value: value > 0, "a number > 0"),
    "train.weight_decay": _NON_NEGATIVE,
    "train.momentum": _PROBABILITY,
    "train.warmup_iters": _NON_NEGATIVE,
    "train.clip_grad_norm": _NON_NEGATIVE,
    "train.amp": _one_of(AMP_MODES),
    "train.eval_every": _POSITIVE,
    "train.device": _rule(
        lambda device: _DEVICE_PATTERN.fullmatch(device) is not None,
        "'auto', 'cpu', 'cuda' or 'cuda:N'",
    ),
    "train.log_every": _POSITIVE,
    "train.threads": _NON_NEGATIVE,
    "eval.score_thresh": _PROBABILITY,
    "eval.nms_thresh": _PROBABILITY,
    "eval.max_detections": _POSITIVE,
    "eval.batch_size": _POSITIVE,
    "mtl.method": _one_of(MTL_METHODS),
    "mtl.sharing": _one_of(MTL_SHARING),
    "mtl.grad_on": _one_of(GRAD_TARGETS),
    "mtl.dwa_temperature": _rule(lambda value: value > 0, "a number > 0"),
    "mtl.gradnorm_alpha": _NON_NEGATIVE,
    "mtl.gradnorm_lr": _rule(lambda value: value > 0, "a number > 0"),
    "mtl.cagrad_c": _NON_NEGATIVE,
    "mtl.log_every": _NON_NEGATIVE,
    "data.on_invalid": _one_of(ON_INVALID),
    "data.max_bad_image_fraction": _PROBABILITY,
    # Keys of list elements drop the index: data.extra_sources[1].tasks -> data.extra_sources[].tasks
    "data.extra_sources[].tasks": _rule(
        _distinct_tasks,
        f"a non-empty list of distinct tasks from {list(TASKS)} ('inst' needs 'det')",
    ),
    "data.extra_sources[].class_names": _rule(
        lambda names: len(set(names)) == len(names) and all(names), "distinct, non-empty names"
    ),
    "train.nan_policy": _one_of(NAN_POLICIES),
    "train.max_nan_skips": _NON_NEGATIVE,
    "train.checkpoint_every": _NON_NEGATIVE,
    "mtl.weights": _rule(
        lambda weights: set(weights) <= set(TASKS) and all(w >= 0 for w in weights.values()),
        f"task names from {list(TASKS)} mapped to weights >= 0",
    ),
}


def _fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return inner[0]
    return None


def _type_name(tp: Any) -> str:
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{_type_name(inner)} or None"
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
        return "mapping"
    if typing.get_origin(tp) is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    return tp.__name__


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_LIST_INDEX = re.compile(r"\[\d+\]")


def _schema_key(path: str) -> str:
    """``data.extra_sources[1].tasks`` -> ``data.extra_sources[].tasks`` (the key in the schema)."""
    return _LIST_INDEX.sub("[]", path)


def _type_error(value: Any, tp: Any, path: str, source: str) -> ConfigError:
    hint = ""
    if isinstance(value, bool) and tp is str:
        hint = " (YAML reads unquoted on/off/yes/no/true/false as booleans; quote the value)"
    elif value in ("None", "none") and _optional_inner(tp) is not None:
        hint = " (write null for None)"
    where = f"{path}: " if path else "top level: "
    return ConfigError(f"{source}: {where}expected {_type_name(tp)}, got {_describe(value)}{hint}")


def _unknown_key_error(path: str, parent: str, source: str) -> ConfigError:
    """Error for an unknown dotted ``path`` under ``parent``, suggesting the nearest valid key."""
    name = path.rpartition(".")[2]
    schema_path, schema_parent = _schema_key(path), _schema_key(parent)
    keys = [
        key
        for key in _dotted_keys()
        if not schema_path.startswith(key + ".")
        # keys inside list elements only where the unknown key is inside that list too
        and ("[]" not in key or key.startswith(schema_parent + "."))
    ]
    siblings = [key for key in keys if key.rpartition(".")[0] == schema_parent]
    # Siblings first (train.epoch -> train.epochs), then anywhere (train.batch_size -> data.batch_size).
    for candidates in (siblings, keys):
        by_name = {key.rpartition(".")[2]: key for key in reversed(candidates)}
        close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.6)
        if close:
            match = by_name[close[0]]
            if match.startswith(schema_parent + ".") and schema_parent != parent:
                match = parent + match[len(schema_parent) :]  # put the list index back
            return ConfigError(f"{source}: unknown key '{path}'; did you mean '{match}'?")
    if not siblings:
        return ConfigError(f"{source}: unknown key '{path}': '{parent}' has no sub-keys")
    names = ", ".join(key.rpartition(".")[2] for key in siblings)
    where = f"'{parent}'" if parent else "the top level"
    return ConfigError(f"{source}: unknown key '{path}'; valid keys at {where}: {names}")


def _convert(value: Any, tp: Any, path: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp`` (recursively) and return it in canonical form."""
    inner = _optional_inner(tp)
    if inner is not None and value is None:
        return None
    base = inner or tp
    origin = typing.get_origin(base)
    if dataclasses.is_dataclass(base):
        result = _convert_dataclass(value, base, path, source)
    else:
        accepted = {list: (list, tuple), dict: Mapping, float: (int, float)}.get(
            origin or base, base
        )
        # bool is an int subclass, but `epochs: true` is a mistake, not 1.
        if not isinstance(value, accepted) or (isinstance(value, bool) and base is not bool):
            raise _type_error(value, tp, path, source)
        if origin is list:
            (item_type,) = typing.get_args(base)
            result = [_convert(v, item_type, f"{path}[{i}]", source) for i, v in enumerate(value)]
        elif origin is dict:
            item_type = typing.get_args(base)[1]
            for key in value:
                if not isinstance(key, str):
                    raise ConfigError(f"{source}: {path}: expected str keys, got {_describe(key)}")
            result = {k: _convert(v, item_type, _join(path, k), source) for k, v in value.items()}
        else:
            result = float(value) if base is float else value
    check = _FIELD_CHECKS.get(_schema_key(path))
    problem = check(result) if check is not None else None
    if problem:
        raise ConfigError(f"{source}: {path}: {problem}")
    return result


def _convert_dataclass(value: Any, cls: type, path: str, source: str) -> Any:
    if isinstance(value, cls):
        value = dataclasses.asdict(value)
    if value is None:
        value = {}  # an empty YAML section ("train:") means all defaults
    if not isinstance(value, Mapping):
        raise _type_error(value, cls, path, source)
    fields = _fields(cls)
    kwargs = {}
    for key, item in value.items():
        if key not in fields:
            raise _unknown_key_error(_join(path, str(key)), path, source)
        kwargs[key] = _convert(item, fields[key], _join(path, key), source)
    return cls(**kwargs)


def _check_consistency(cfg: Config, source: str) -> None:
    """Checks that involve more than one field."""
    model = cfg.model
    for name in ("class_names", "category_ids"):
        values = getattr(model, name)
        if values and model.num_classes is not None and len(values) != model.num_classes:
            raise ConfigError(
                f"{source}: model.{name}: has {len(values)} entries but model.num_classes is "
                f"{model.num_classes}"
            )
    if len(set(model.category_ids)) != len(model.category_ids):
        raise ConfigError(f"{source}: model.category_ids: duplicate ids in {model.category_ids}")
    for index, extra in enumerate(cfg.data.extra_sources):
        _check_source(extra, f"data.extra_sources[{index}]", source)


def _check_source(extra: SourceConfig, path: str, source: str) -> None:
    """A source is either COCO (ann + images) or semantic PNG (images + sem_masks + class_names)."""
    if not extra.images:
        raise ConfigError(f"{source}: {path}.images: every source needs its image folder")
    if bool(extra.ann) == bool(extra.sem_masks):
        raise ConfigError(
            f"{source}: {path}: set exactly one of 'ann' (COCO JSON) or 'sem_masks' (PNG folder)"
        )
    if extra.sem_masks:
        if extra.tasks != ["sem"]:
            raise ConfigError(
                f"{source}: {path}.tasks: a semantic PNG source labels only sem; write tasks: [sem] "
                f"(got {extra.tasks})"
            )
        if not extra.class_names:
            raise ConfigError(
                f"{source}: {path}.class_names: a semantic PNG source needs the name of each "
                "class id 1..K"
            )
    elif extra.class_names:
        raise ConfigError(
            f"{source}: {path}.class_names: only for semantic PNG sources; a COCO source takes "
            "its names from the JSON categories"
        )


# ---------------------------------------------------------------- public API


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build a validated :class:`Config` from nested plain data; missing keys keep their defaults.

    Raises ConfigError naming ``source`` and the dotted key on unknown keys, wrong types or bad values.
    """
    cfg = _convert_dataclass(data, Config, "", source)
    _check_consistency(cfg, source)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain dicts/lists/scalars (a deep copy)."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Config) -> str:
    """YAML text that :func:`config_from_yaml` turns back into an equal Config."""
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def config_from_yaml(text: str, source: str = "<checkpoint>") -> Config:
    """Parse and validate YAML text (e.g. the config stored in a checkpoint)."""
    return config_from_dict(_parse_yaml(text, source) or {}, source)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML to ``path``, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_yaml(cfg), encoding="utf-8")


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (``None`` -> defaults), apply ``key=value`` overrides and validate.

    Raises ConfigError naming the file (missing, unreadable, invalid YAML or content) or the override.
    """
    if path is None:
        cfg = Config()
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read config file: {error}") from None
        cfg = config_from_yaml(text, source=str(path))
    return apply_overrides(cfg, overrides) if overrides else cfg


@overload
def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config: ...
@overload
def apply_overrides(cfg: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]: ...
def apply_overrides(
    cfg: Config | Mapping[str, Any], overrides: Sequence[str]
) -> Config | dict[str, Any]:
    """Apply ``dotted.key=value`` overrides, in order; the input is not modified.

    A Config gives back a new validated Config; a (possibly partial) dict gives back a new dict whose
    overridden values are checked. Values are parsed as YAML unless the field is a string.
    """
    data = config_to_dict(cfg) if isinstance(cfg, Config) else copy.deepcopy(dict(cfg))
    for item in overrides:
        _apply_one(data, item)
    return config_from_dict(data, "command-line overrides") if isinstance(cfg, Config) else data


def _dotted_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _fields(cls).items():
        keys.append(_join(prefix, name))
        if dataclasses.is_dataclass(tp):
            keys.extend(_dotted_keys(tp, _join(prefix, name)))
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            keys.extend(_dotted_keys(typing.get_args(tp)[0], _join(prefix, name) + "[]"))
    return keys


def _target_type(parts: list[str], source: str) -> Any:
    """The annotation that ``parts`` (a dotted key split on '.') points to."""
    tp: Any = Config
    for depth, part in enumerate(parts):
        if dataclasses.is_dataclass(tp) and part in _fields(tp):
            tp = _fields(tp)[part]
        elif typing.get_origin(tp) is dict and part:
            tp = typing.get_args(tp)[1]  # a key inside a dict field, e.g. mtl.weights.det
        elif typing.get_origin(tp) is list and depth:
            where = ".".join(parts[:depth])
            raise ConfigError(f"{source}: '{where}' is a list; set it whole: {where}=[...]")
        else:
            raise _unknown_key_error(".".join(parts), ".".join(parts[:depth]), source)
    return tp


def _apply_one(data: dict[str, Any], item: str) -> None:
    source = f"override '{item}'"
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{source}: expected 'dotted.key=value', e.g. 'train.epochs=3'")
    parts = key.split(".")
    tp = _target_type(parts, source)
    if str in (tp, _optional_inner(tp)):
        value: Any = None if _optional_inner(tp) is not None and raw in _YAML_NULLS else raw
    else:
        value = _parse_yaml(raw, source, locate=False)

    parent = data
    for depth, part in enumerate(parts[:-1]):
        child = parent.get(part)
        if child is None:
            child = parent[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{source}: '{'.'.join(parts[: depth + 1])}' is not a mapping")
        parent = child
    current = parent.get(parts[-1])
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping) and isinstance(current, Mapping):
        value = _deep_merge(current, value)  # a section override keeps the fields it does not name
    parent[parts[-1]] = value
    # Check the enclosing section now, so that an error names this override.
    _convert(parent, _target_type(parts[:-1], source), ".".join(parts[:-1]), source)


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            value = _deep_merge(merged[key], value)
        merged[key] = value
    return merged
