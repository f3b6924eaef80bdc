"""Typed configuration files: the base of every section model, and located error messages.

The rules file (guard/policy/model.py) and the catalogue (guard/identity/catalogue_model.py)
are pydantic models. This module turns a pydantic ``ValidationError`` into one
``file:line:col: reason`` per problem: each error's location (keys and list indexes) is
followed through the parsed YAML (guard/yamlfile.py) to the offending key or value, and
pydantic's wording is replaced by ours (no Python reprs; the valid keys or names where
that helps).

Validators in the models report a problem with :func:`problem` (a message, no prefix),
or several problems at sub-locations with :func:`fail`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, ValidationInfo
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from guard.errors import ConfigError, Problem
from guard.yamlfile import Located

M = TypeVar("M", bound=BaseModel)

#: Prefix of the tags of discriminated unions: they appear in error locations, never in files.
UNION_TAG = "~"
#: How an item of a list is called in messages, when the item has an ``id`` or ``name``.
_ITEM_NOUNS = {"rules": "rule", "agents": "agent"}


class Section(BaseModel):
    """A mapping in a configuration file: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


def problem(message: str) -> PydanticCustomError:
    """A validation error carrying ``message`` as is (raise it from a validator)."""
    return PydanticCustomError("guard", message)  # no context: the message is never formatted


def fail(*problems: tuple[Sequence[str | int], str], value: Any = None) -> NoReturn:
    """Report problems at locations below the model being validated (relative keys and indexes)."""
    details = [InitErrorDetails(type=problem(message), loc=tuple(loc), input=value) for loc, message in problems]
    raise ValidationError.from_exception_data("guard", details)


def context(info: ValidationInfo, key: str) -> Any:
    """A value the loader passed in the validation context (None when validating without one)."""
    return info.context.get(key) if isinstance(info.context, Mapping) else None


def validate(model: type[M], doc: Located, extra: Mapping[str, Any] | None = None) -> M:
    """Validate ``doc`` as ``model``; every problem becomes a located line of one ConfigError."""
    try:
        return model.model_validate(doc.data, context={"located": doc, **(extra or {})})
    except ValidationError as exc:
        problems = {locate(doc, model, error) for error in exc.errors(include_url=False)}
        raise ConfigError.of(list(problems)) from None


def locate(doc: Located, model: type[BaseModel], error: Any) -> Problem:
    """One pydantic error as a :class:`Problem` at the key or value it is about."""
    loc = [step for step in error["loc"] if not (isinstance(step, str) and step.startswith(UNION_TAG))]
    kind = error["type"]
    on_key = kind in ("extra_forbidden", "missing")
    if loc and loc[-1] == "[key]":  # a mapping's key itself failed (a path group's name)
        loc, on_key = loc[:-1], True
    line, column = doc.locate(loc, of_key=on_key)
    where = _label(doc.data, loc[:-1] if on_key else loc)
    reason = _reason(model, loc, error)
    return Problem(doc.file, line, f"{where} {reason}" if where else reason, column)


def _label(data: Any, loc: Sequence[str | int]) -> str:
    """``rule 'x': limit.per: `` for ``["rules", 3, "limit", "per"]`` (empty at the top)."""
    parts: list[str] = []
    node = data
    for i, step in enumerate(loc):
        child = node[step] if _has(node, step) else None
        if isinstance(step, int) and not isinstance(node, list):
            pass  # a single value written where a list is accepted: no index to show
        elif isinstance(step, int):
            ident = child.get("id", child.get("name")) if isinstance(child, dict) else None
            parent = loc[i - 1] if i else None
            if isinstance(ident, str) and isinstance(parent, str) and parent in _ITEM_NOUNS:
                parts = [f"{_ITEM_NOUNS[parent]} '{ident}':"]
            elif parts:
                parts[-1] += f"[{step}]"
            else:
                parts.append(f"[{step}]")
        elif parts and not parts[-1].endswith(":"):
            parts[-1] += f".{step}"
        else:
            parts.append(str(step))
        node = child
    if not parts:
        return ""
    text = " ".join(parts)
    return text if text.endswith(":") else text + ":"


def _has(node: Any, step: str | int) -> bool:
    if isinstance(node, dict):
        return step in node
    return isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)


def show(value: Any) -> str:
    """A value as it would be written in YAML, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


_EXPECTED = {
    "bool_type": "true or false",
    "int_type": "a whole number",
    "float_type": "a number",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _reason(model: type[BaseModel], loc: Sequence[str | int], error: Any) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        keys = allowed_keys(model, loc[:-1])
        expected = f" (expected one of: {', '.join(keys)})" if keys else ""
        return f"unknown key '{loc[-1]}'{expected}"
    if kind == "missing":
        return f"'{loc[-1]}' is required"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {show(value)}"
    if kind == "literal_error":
        return f"{show(value)} is not one of: {str(ctx.get('expected', '')).replace(chr(39), '')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bounds = _bounds(model, loc)
        return f"{show(value)} is out of range ({bounds})" if bounds else f"{show(value)} is out of range"
    if kind == "too_short":
        return "must not be empty"
    return str(error["msg"])  # ours ("guard" errors) or, for a kind not translated above, pydantic's


def _bounds(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    field = field_at(model, loc)
    low = high = None
    for meta in field.metadata if field else ():
        low = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else low
        high = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else high
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}" if high is not None else ""


def _walk(annotation: Any, loc: Sequence[str | int]) -> tuple[Any, FieldInfo | None]:
    """The type at ``loc`` below ``annotation``, and the field it was declared by."""
    field: FieldInfo | None = None
    current = annotation
    for step in loc:
        current = unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(step, str):
            field = next((f for n, f in current.model_fields.items() if step in (n, f.alias)), None)
            if field is None:
                return None, None
            current = field.annotation
        elif typing.get_origin(current) is list and isinstance(step, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None, None
    return unwrap(current), field


def unwrap(annotation: Any) -> Any:
    """``X`` from ``Annotated[X, ...]``, ``X | None`` or a union of one model and plain types."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            models = [a for a in map(unwrap, args) if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = models[0] if models else args[0]
        else:
            return annotation


def allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys the section at ``loc`` accepts (empty when it is not a section)."""
    section, _ = _walk(model, loc)
    if not (isinstance(section, type) and issubclass(section, BaseModel)):
        return []
    return [f.alias or name for name, f in section.model_fields.items()]


def field_at(model: type[BaseModel], loc: Sequence[str | int]) -> FieldInfo | None:
    """The declared field a location belongs to (for its constraints and description)."""
    return _walk(model, loc)[1]


def json_schema_of(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of a type (for hand-written schemas of validated types)."""
    return TypeAdapter(annotation).json_schema()
