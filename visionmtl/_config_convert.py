"""Checking plain data against the config dataclasses: types, unknown keys (with the nearest valid
key) and the per-field rules, giving back canonical values."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from visionmtl._config_rules import _FIELD_CHECKS
from visionmtl.config_schema import Config, ConfigError


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


def _dotted_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _fields(cls).items():
        keys.append(_join(prefix, name))
        if dataclasses.is_dataclass(tp):
            keys.extend(_dotted_keys(tp, _join(prefix, name)))
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            keys.extend(_dotted_keys(typing.get_args(tp)[0], _join(prefix, name) + "[]"))
    return keys
