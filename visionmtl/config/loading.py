"""Reading and writing configs: YAML files and text, plain dicts, dotted command-line overrides, and
pydantic's validation errors turned into one line that names the file, line and dotted key."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, overload

import yaml
from pydantic import TypeAdapter, ValidationError

from visionmtl.config.schema import Config
from visionmtl.errors import ConfigError

_LEGACY_CLASS_KEYS = ("num_classes", "class_names", "category_ids")
_YAML_NULLS = frozenset({"null", "Null", "NULL", "~"})
_BOUNDS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}
Loc = tuple[str | int, ...]  # a path into the config: field names, list indices, dict keys


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


def _key_lines(text: str) -> dict[Loc, int]:
    """The 1-based line of every key and list item in YAML ``text``, by its path."""
    lines: dict[Loc, int] = {}

    def walk(node: yaml.Node, loc: Loc) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*loc, key.value)] = key.start_mark.line + 1
                walk(value, (*loc, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*loc, index)] = item.start_mark.line + 1
                walk(item, (*loc, index))

    root = yaml.compose(text, Loader=_Loader)
    if root is not None:
        walk(root, ())
    return lines


# ---------------------------------------------------------------- public API


def config_from_dict(
    data: Mapping[str, Any], source: str = "<dict>", lines: Mapping[Loc, int] | None = None
) -> Config:
    """Build a validated :class:`Config` from nested plain data; missing keys keep their defaults.

    Raises ConfigError naming ``source`` (and the line, given ``lines``) and the dotted key on unknown
    keys, wrong types or bad values.
    """
    data, legacy = split_legacy_class_lists(data)
    for key, value in legacy.items():
        if value:
            raise ConfigError(
                f"{source}: model.{key}: class lists come from the training data and are stored "
                "in checkpoints; delete model.num_classes, model.class_names and model.category_ids"
            )
    return _validate(data, Config, (), source, lines or {})


def split_legacy_class_lists(data: Any) -> tuple[Any, dict[str, Any]]:
    """``(data without them, {key: value})`` for the class lists that configs written before
    checkpoint format 2 kept in ``model`` (``num_classes``, ``class_names``, ``category_ids``;
    empty in a run's config.yaml, filled in a checkpoint's)."""
    model = data.get("model") if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping) or not any(key in model for key in _LEGACY_CLASS_KEYS):
        return data, {}
    model = dict(model)
    legacy = {key: model.pop(key) for key in _LEGACY_CLASS_KEYS if key in model}
    return {**data, "model": model}, legacy


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain dicts/lists/scalars (a deep copy)."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Config) -> str:
    """YAML text that :func:`config_from_yaml` turns back into an equal Config."""
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def config_from_yaml(text: str, source: str = "<checkpoint>") -> Config:
    """Parse and validate YAML text (e.g. the config stored in a checkpoint)."""
    data = _parse_yaml(text, source) or {}
    return config_from_dict(data, source, _key_lines(text))


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

    A key may index a list: ``data.extra_sources.0.tasks`` or ``data.extra_sources[0].tasks``.
    A Config gives back a new validated Config; a (possibly partial) dict gives back a new dict whose
    overridden values are checked. Values are parsed as YAML unless the field is text.
    """
    data = config_to_dict(cfg) if isinstance(cfg, Config) else copy.deepcopy(dict(cfg))
    for item in overrides:
        _apply_one(data, item)
    return config_from_dict(data, "command-line overrides") if isinstance(cfg, Config) else data


def _apply_one(data: dict[str, Any], item: str) -> None:
    source = f"override '{item}'"
    key, sep, raw = item.partition("=")
    key = re.sub(r"\[(\d+)\]", r".\1", key.strip())  # a[0].b -> a.0.b
    if not sep or not key:
        raise ConfigError(f"{source}: expected 'dotted.key=value', e.g. 'train.epochs=3'")
    loc: Loc = tuple(int(part) if part.isdigit() else part for part in key.split("."))
    tp = _annotation_at(loc, source)
    if _is_text(tp):
        value: Any = None if _optional_inner(tp) is not None and raw in _YAML_NULLS else raw
    else:
        value = _parse_yaml(raw, source, locate=False)
    parent = _container(data, loc[:-1], source)
    if isinstance(parent, list):
        parent[loc[-1]] = value
    else:
        current = parent.get(loc[-1])
        if isinstance(value, Mapping) and isinstance(current, Mapping) and _is_section(tp):
            value = _deep_merge(current, value)  # a section override keeps the fields it omits
        parent[loc[-1]] = value
    # Check the value now, so that an error names this override (and a dict field's own rule,
    # e.g. mtl.weights' task names); rules across fields wait for the whole config.
    section = _annotation_at(loc[:-1], source)
    checked = (parent, section, loc[:-1]) if not _is_section(section) else (value, tp, loc)
    _validate(*checked, source, {})


def _container(data: dict[str, Any], loc: Loc, source: str) -> Any:
    """The dict or list at ``loc`` inside ``data``, creating missing sections."""
    parent: Any = data
    for depth, part in enumerate(loc):
        if isinstance(parent, list):
            if part >= len(parent):
                where = _dotted(loc[:depth])
                raise ConfigError(f"{source}: '{where}' has {len(parent)} elements, no [{part}]")
            child = parent[part]
        else:
            child = parent.get(part)
            if child is None:
                child = parent[part] = {}
        if not isinstance(child, dict | list):
            raise ConfigError(f"{source}: '{_dotted(loc[: depth + 1])}' is not a mapping")
        parent = child
    return parent


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            value = _deep_merge(merged[key], value)
        merged[key] = value
    return merged


# ---------------------------------------------------------------- the schema as types


def _strip(tp: Any) -> Any:
    """The plain type under ``Annotated[...]`` metadata."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    tp = _strip(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return next(arg for arg in typing.get_args(tp) if arg is not type(None))
    return None


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(_strip(tp))


def _is_text(tp: Any) -> bool:
    """A str (or Literal of strs) field: overrides keep the raw text, so ``amp=off`` is "off"."""
    base = _strip(_optional_inner(tp) or tp)
    return base is str or typing.get_origin(base) is Literal


@functools.cache
def _fields(cls: type) -> dict[str, Any]:
    """Field name -> annotation (with its ``Annotated`` rules) of a config dataclass."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _annotation_at(loc: Loc, source: str) -> Any:
    """The annotation of the field that ``loc`` points to (ConfigError for an unknown key)."""
    tp: Any = Config
    for depth, part in enumerate(loc):
        base = _strip(_optional_inner(tp) or tp)
        if dataclasses.is_dataclass(base) and part in _fields(base):
            tp = _fields(base)[part]
        elif typing.get_origin(base) is dict and isinstance(part, str):
            tp = typing.get_args(base)[1]  # a key inside a dict field, e.g. mtl.weights.det
        elif typing.get_origin(base) is list and isinstance(part, int):
            tp = typing.get_args(base)[0]
        elif typing.get_origin(base) is list:
            where = _dotted(loc[:depth])
            raise ConfigError(
                f"{source}: '{where}' is a list; set it whole: {where}=[...], or one element's "
                f"key: {where}.0.{part}=..."
            )
        else:
            raise _unknown_key_error(_dotted(loc[: depth + 1]), _dotted(loc[:depth]), source)
    return tp


def _type_name(tp: Any) -> str:
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{_type_name(inner)} or None"
    tp = _strip(tp)
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
        return "mapping"
    if typing.get_origin(tp) is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    return "str" if typing.get_origin(tp) is Literal else tp.__name__


def _dotted(loc: Loc) -> str:
    """``("data", "extra_sources", 1, "tasks")`` -> ``data.extra_sources[1].tasks``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _dotted_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every key of the schema, with ``[]`` for list elements (``data.extra_sources[].tasks``)."""
    keys = []
    for name, tp in _fields(cls).items():
        key = f"{prefix}.{name}" if prefix else name
        keys.append(key)
        base = _strip(tp)
        if dataclasses.is_dataclass(base):
            keys.extend(_dotted_keys(base, key))
        elif typing.get_origin(base) is list and dataclasses.is_dataclass(typing.get_args(base)[0]):
            keys.extend(_dotted_keys(typing.get_args(base)[0], key + "[]"))
    return keys


# ---------------------------------------------------------------- errors


def _validate(value: Any, tp: Any, prefix: Loc, source: str, lines: Mapping[Loc, int]) -> Any:
    """``value`` validated as ``tp`` (found at ``prefix`` in the config), or ConfigError."""
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as error:
        # Report the problem that comes first in the input (pydantic goes in schema order).
        order = {loc: index for index, loc in enumerate(_paths(value))}
        first = min(error.errors(include_url=False), key=lambda e: _nearest(order, e["loc"], -1))
        raise _config_error(first, prefix, source, lines) from None


def _nearest(by_loc: Mapping[Loc, Any], loc: Loc, default: Any) -> Any:
    """The value of the longest prefix of ``loc`` in ``by_loc`` (a key's own entry first)."""
    return next((by_loc[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in by_loc), default)


def _paths(value: Any, loc: Loc = ()) -> list[Loc]:
    """Every path inside nested dicts and lists, in their order."""
    if isinstance(value, Mapping):
        items: Any = value.items()
    else:
        items = enumerate(value) if isinstance(value, list) else ()
    paths = []
    for key, item in items:
        paths.append((*loc, key))
        paths.extend(_paths(item, (*loc, key)))
    return paths


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def _config_error(
    error: Mapping[str, Any], prefix: Loc, source: str, lines: Mapping[Loc, int]
) -> ConfigError:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    loc: Loc = (*prefix, *error["loc"])
    path = _dotted(loc)
    if kind == "config_rule":  # a cross-field rule names a key below its section
        path = f"{path}.{ctx['key']}" if path else ctx["key"]
        parts = re.sub(r"\[(\d+)\]", r".\1", ctx["key"]).split(".")
        loc = (*loc, *(int(part) if part.isdigit() else part for part in parts))
    line = _nearest(lines, loc, None)
    where = f"{source}:{line}" if line else source
    if kind == "unexpected_keyword_argument":
        return _unknown_key_error(path, _dotted(loc[:-1]), where)
    if loc and loc[-1] == "[key]":
        return ConfigError(
            f"{where}: {_dotted(loc[:-2])}: expected str keys, got {_describe(loc[-2])}"
        )
    if kind == "config_rule":
        problem = ctx["message"]
    elif kind == "value_error":  # a field rule: its message is "expected ..., got ..."
        problem = error["msg"].removeprefix("Value error, ")
    elif kind == "literal_error" and isinstance(value, str):
        problem = f"expected one of {ctx['expected']}, got {value!r}"
    elif kind in _BOUNDS:
        bound = next(iter(ctx.values()))  # "> 0", not "> 0.0"
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        problem = f"expected a number {_BOUNDS[kind]} {bound}, got {value!r}"
    else:
        problem = _type_problem(value, _annotation_at(loc, source))
    return ConfigError(f"{where}: {path or 'top level'}: {problem}")


def _type_problem(value: Any, tp: Any) -> str:
    hint = ""
    if isinstance(value, bool) and _is_text(tp):
        hint = " (YAML reads unquoted on/off/yes/no/true/false as booleans; quote the value)"
    elif value in ("None", "none") and _optional_inner(tp) is not None:
        hint = " (write null for None)"
    return f"expected {_type_name(tp)}, got {_describe(value)}{hint}"


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _unknown_key_error(path: str, parent: str, source: str) -> ConfigError:
    """Error for an unknown dotted ``path`` under ``parent``, suggesting the nearest valid key."""
    name = path.rpartition(".")[2]
    schema_path, schema_parent = (re.sub(r"\[\d+\]", "[]", p) for p in (path, parent))
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
