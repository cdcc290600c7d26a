"""Typed items: dataclass instances a callback yields, and dicts checked against the
spider's `item_type` (a TypedDict or a dataclass).

An item is checked before it is stored: every required field present, and every field
whose annotation is a simple type (str, int, float, bool, bytes, None, list/dict/tuple/set
and their element types, Literal, unions of these) holding a value of that type. An
invalid item is dropped whole, with its reason (`Book: field 'price': expected float,
got str`); it is never stored in part. Annotations of other kinds are not checked.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from crawler.errors import DropItem, UsageError

Check = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Schema:
    """What an item type requires: its name, its fields, and a check per field."""

    name: str
    required: frozenset[str]
    checks: Mapping[str, tuple[str, Check | None]]  # field -> (type as written, check)

    def problem(self, data: Mapping[str, Any]) -> str | None:
        """What is wrong with `data` as an item of this type, or None."""
        for name in self.required:
            if name not in data:
                return f"missing field {name!r}"
        checks = self.checks
        for name, value in data.items():
            known = checks.get(name)
            if known is None:
                return f"unknown field {name!r}"
            written, check = known
            if check is not None and not check(value):
                return f"field {name!r}: expected {written}, got {type(value).__name__}"
        return None


def is_item_type(cls: object) -> bool:
    """Whether `cls` can be a spider's `item_type`: a dataclass or a TypedDict."""
    return isinstance(cls, type) and (dataclasses.is_dataclass(cls) or typing.is_typeddict(cls))


@cache
def schema_of(cls: type) -> Schema:
    """The schema of a dataclass or TypedDict (UsageError if it is neither, or its
    annotations do not resolve)."""
    if not is_item_type(cls):
        raise UsageError(f"item_type {cls!r}: expected a dataclass or a TypedDict")
    try:
        hints = get_type_hints(cls)
    except Exception as exc:  # a forward reference that does not resolve
        raise UsageError(f"item_type {cls.__name__}: {type(exc).__name__}: {exc}") from None
    if dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
        required = frozenset(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
    else:
        names = list(hints)
        required = frozenset(getattr(cls, "__required_keys__", ()))
    checks = {
        name: (_written(hints.get(name, Any)), _check(hints.get(name, Any))) for name in names
    }
    return Schema(cls.__name__, required, checks)


def to_record(item: Any, item_type: type | None) -> tuple[str | None, dict[str, Any]]:
    """(type name, fields) to store for an item; DropItem with the reason if it is invalid.
    A plain dict without an `item_type` is stored as it is, unnamed."""
    if isinstance(item, dict):
        if item_type is None:
            return None, item
        schema = schema_of(item_type)
        data = item
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        schema = schema_of(type(item))
        data = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    else:  # a pipeline returned something else
        raise DropItem(f"not an item: {type(item).__name__} (expected a dict or a dataclass)")
    problem = schema.problem(data)
    if problem is not None:
        raise DropItem(f"{schema.name}: {problem}")
    if not isinstance(item, dict):
        data = dataclasses.asdict(item)  # nested dataclasses become dicts too
    return schema.name, data


def _check(hint: Any) -> Check | None:
    """A test of a value against an annotation; None where the annotation is not checked."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return None
    if hint is None or hint is type(None):
        return _is_none
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        parts = [_check(arg) for arg in get_args(hint)]
        if any(part is None for part in parts):
            return None
        checks = [part for part in parts if part is not None]
        return lambda value: any(check(value) for check in checks)
    if origin is Literal:
        allowed = get_args(hint)
        return lambda value: value in allowed
    if hint is float:
        return _is_number
    if hint is int:
        return _is_int
    if origin in (list, set, frozenset, tuple):
        return _container(origin, get_args(hint))
    if origin is dict:
        return lambda value: isinstance(value, dict)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint) or typing.is_typeddict(hint):
            cls = dict if typing.is_typeddict(hint) else hint
            return lambda value: isinstance(value, cls | dict)
        return lambda value: isinstance(value, hint)
    return None


def _container(origin: type, args: tuple[Any, ...]) -> Check:
    element = _check(args[0]) if len(args) == 1 or (len(args) == 2 and args[1] is ...) else None
    if element is None:
        return lambda value: isinstance(value, origin)
    return lambda value: isinstance(value, origin) and all(element(v) for v in value)  # type: ignore[attr-defined]


def _is_none(value: Any) -> bool:
    return value is None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _written(hint: Any) -> str:
    """An annotation as a reader would write it: `float`, `list[str]`, `str | None`."""
    if hint is None or hint is type(None):
        return "None"
    if isinstance(hint, type) and not get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")
