"""The config reference: every key of the schema with its type or allowed values, its default and
its comment in :mod:`visionmtl.config.schema`, as Markdown (``visionmtl config --help-fields``).

The descriptions are the schema's own field comments (the ``#`` lines just above a field and the
comment on its line), read from the source with :mod:`tokenize`, so the reference cannot drift from
the code; ``docs/config_reference.md`` is this module's output (``make docs`` writes it again).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator
from pydantic.fields import FieldInfo

from visionmtl.config.loading import (
    _annotation_at,
    _dotted_keys,
    _is_section,
    _optional_inner,
    _strip,
    _type_name,
)

REGENERATE = "visionmtl config --help-fields --out docs/config_reference.md"


def config_reference() -> str:
    """The whole reference as Markdown: one table per section (``model``, ``model.backbone``, ...,
    ``data.extra_sources[]``, ``train``, ``eval``, ``mtl``), rows in the schema's order."""
    keys = _dotted_keys()
    sections = [""] + [key + ("[]" if _is_list_of_sections(key) else "") for key in keys]
    sections = [prefix for prefix in sections if prefix == "" or _section_class(prefix)]
    parts = [
        "# Config reference",
        "",
        f"Generated from `visionmtl/config/schema.py` by `{REGENERATE}` (`make docs`); do not "
        "edit by hand. Every key can be set in the YAML file or on the command line "
        "(`--set model.backbone.name=resnet50`); unknown keys are refused. A list element's keys "
        "are written `data.extra_sources[].tasks` here and `data.extra_sources.0.tasks` in "
        "`--set`. `null` (YAML) is Python's None.",
    ]
    for prefix in sections:
        rows = [key for key in keys if _parent(key) == prefix]
        if prefix == "" and all(_is_section(_annotation(key)) for key in rows):
            continue  # the top level holds sections only: their tables follow
        cls = _section_class(prefix)
        parts += ["", f"## `{prefix or 'top level'}`", ""]
        if _doc(cls):
            parts += [_doc(cls), ""]
        parts += ["| key | type / allowed values | default | description |", "|---|---|---|---|"]
        parts += [_row(key, cls) for key in rows]
    return "\n".join(parts) + "\n"


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in the source of config dataclass ``cls``: the ``#`` lines just
    above the field (no blank line between) and the comments inside its statement, joined."""
    return dict(_field_comments(cls))


@functools.cache
def _field_comments(cls: type) -> tuple[tuple[str, str], ...]:
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments: dict[int, str] = {}  # line -> comment text
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
    found = []
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        above = []
        line = statement.lineno - 1
        while line >= 1 and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        inside = [
            comments[n] for n in range(statement.lineno, statement.end_lineno + 1) if n in comments
        ]
        found.append((statement.target.id, " ".join(above + inside)))
    return tuple(found)


def allowed_values(tp: Any) -> str:
    """What a field of annotation ``tp`` accepts, in words: ``int >= 1``, ``one of `off`, `bf16```,
    ``list of int; a non-empty ... list``, ``str, or null``."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{allowed_values(inner)}, or null"
    base = _strip(tp)
    origin = typing.get_origin(base)
    if origin is Literal:
        text = "one of " + ", ".join(f"`{value}`" for value in typing.get_args(base))
    elif dataclasses.is_dataclass(base):
        text = "section"
    elif origin is list:
        element = typing.get_args(base)[0]
        what = "sections" if _is_section(element) else allowed_values(element)
        text = f"list of {what}"
    elif origin is dict:
        key, value = (allowed_values(arg) for arg in typing.get_args(base))
        text = f"mapping of {key} to {value}"
    else:
        text = _type_name(base)
    bounds, rules = _rules(tp)
    return "; ".join([" ".join([text, *bounds]), *rules])


def _rules(tp: Any) -> tuple[list[str], list[str]]:
    """The bounds (``>= 1``) and the ``_rule`` texts in ``tp``'s ``Annotated`` metadata (nested
    ``Annotated`` types are flattened into one, the inner type's rules first)."""
    bounds: list[str] = []
    rules: list[str] = []
    for item in typing.get_args(tp)[1:] if typing.get_origin(tp) is Annotated else ():
        if isinstance(item, FieldInfo):
            bounds.append(_bounds(item.metadata))
        elif isinstance(item, AfterValidator) and hasattr(item.func, "expected"):
            rules.append(item.func.expected)
    return [bound for bound in bounds if bound], rules


def _bounds(metadata: list[Any]) -> str:
    """``>= 0``, ``> 0``, ``in [0, 1]``, ``in (0, 1]``, ... from annotated_types bounds."""
    found = {
        kind: getattr(item, kind)
        for item in metadata
        for kind in ("ge", "gt", "le", "lt")
        if getattr(item, kind, None) is not None
    }
    low = next(((found[k], k) for k in ("ge", "gt") if k in found), None)
    high = next(((found[k], k) for k in ("le", "lt") if k in found), None)
    if low and high:
        return f"in {'[' if low[1] == 'ge' else '('}{low[0]}, {high[0]}{']' if high[1] == 'le' else ')'}"
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " ".join(f"{symbols[kind]} {value}" for value, kind in filter(None, (low, high)))


def _row(key: str, cls: type) -> str:
    name = key.rpartition(".")[2]
    tp = _annotation(key)
    if _is_section(tp) or _is_list_of_sections(key):
        target = key + ("[]" if _is_list_of_sections(key) else "")
        section = _section_class(target)
        default = "`[]`" if _is_list_of_sections(key) else "(section)"
        summary = field_comments(cls)[name] or _doc(section, first_paragraph=True)
        description = f"{summary} Its keys: `{target}` below."
    else:
        default = f"`{_yaml(_default(cls, name))}`"
        description = field_comments(cls)[name]
    cells = [f"`{key}`", allowed_values(tp), default, description]
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _default(cls: type, name: str) -> Any:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _yaml(value: Any) -> str:
    """``value`` as it would be written in a YAML config: ``[8, 16, 32]``, ``null``, ``'off'``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def _annotation(key: str) -> Any:
    return _annotation_at(_loc(key), "the config reference")


def _loc(key: str) -> tuple[str | int, ...]:
    """``data.extra_sources[].tasks`` -> ``("data", "extra_sources", 0, "tasks")``; "" -> ()."""
    parts = key.replace("[]", ".0").split(".") if key else []
    return tuple(int(part) if part.isdigit() else part for part in parts)


def _parent(key: str) -> str:
    return key.rpartition(".")[0]


def _is_list_of_sections(key: str) -> bool:
    base = _strip(_annotation(key))
    return typing.get_origin(base) is list and _is_section(typing.get_args(base)[0])


def _section_class(prefix: str) -> type | None:
    """The dataclass whose fields are the keys under ``prefix`` ("" the top level), else None."""
    base = _strip(_annotation(prefix))  # "x[]": the list's element
    return base if dataclasses.is_dataclass(base) else None


def _doc(cls: type, first_paragraph: bool = False) -> str:
    """The class docstring on one line ("" where dataclasses made one up from the signature)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    doc = doc.split("\n\n")[0] if first_paragraph else doc
    return "" if doc.startswith(f"{cls.__name__}(") else _one_line(doc)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


__all__ = ["REGENERATE", "allowed_values", "config_reference", "field_comments"]
