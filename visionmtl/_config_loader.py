"""Reading and writing configs: YAML text and files, plain dicts and dotted command-line overrides.

The public functions are re-exported by :mod:`visionmtl.config`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import yaml

from visionmtl._config_convert import (
    _convert,
    _convert_dataclass,
    _fields,
    _optional_inner,
    _unknown_key_error,
)
from visionmtl._config_rules import _check_consistency
from visionmtl.config_schema import Config, ConfigError

_YAML_NULLS = frozenset({"null", "Null", "NULL", "~"})


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
