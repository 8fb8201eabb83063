"""JSON round trip of the suite's frozen dataclass records: plain data out, typed records back in.

Kept below every record module (cases, results, worker specs) so that any of them can be written and read
without importing the others.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(record: Any) -> Any:
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_dict(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, (list, tuple)):
        return [to_dict(x) for x in record]
    if isinstance(record, dict):
        return {str(k): to_dict(v) for k, v in record.items()}
    return record


def from_dict(cls: type[T], data: Any) -> T:
    """Build `cls` from JSON data, converting nested records and tuples by the type hints."""
    return _converter(cls)(data)


def _same(value: Any) -> Any:
    return value


def _to_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) else value


@functools.cache
def _converter(tp: Any) -> Callable[[Any], Any]:
    """The function that converts JSON data to `tp`, worked out once per type hint: reading a large results
    file converts millions of values, and working out what each one's hint means again on every value
    (typing.get_type_hints above all) was most of its time."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            return _same
        inner, empty_is_none = _converter(args[0]), getattr(args[0], "EMPTY_IS_NONE", False)

        def optional(value: Any) -> Any:
            if value is None or (empty_is_none and value == {}):
                return None  # {}: a table typed later, where {} was its "not recorded" (TimingPolicy)
            return inner(value)

        return optional
    if dataclasses.is_dataclass(tp):
        return _record_converter(tp)
    if origin is tuple:
        return _tuple_converter(typing.get_args(tp))
    if origin is dict:
        vt = _converter(typing.get_args(tp)[1])

        def mapping(value: Any) -> Any:
            return None if value is None else {k: vt(v) for k, v in value.items()}

        return mapping
    return _to_float if tp is float else _same


def _record_converter(cls: type) -> Callable[[Any], Any]:
    hints = typing.get_type_hints(cls)
    names = frozenset(f.name for f in dataclasses.fields(cls))
    fields: dict[str, Callable[[Any], Any]] = {}

    def record(value: Any) -> Any:
        if value is None:
            return None
        unknown = value.keys() - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
        if not fields:  # filled at first use: a record may hold its own type (a recursive hint)
            fields.update((k, _converter(hints[k])) for k in names)
        return cls(**{k: fields[k](v) for k, v in value.items()})

    return record


def _tuple_converter(args: tuple) -> Callable[[Any], Any]:
    if args and args[-1] is not Ellipsis:  # a fixed-length tuple such as tuple[str, int]: by position
        items = [_converter(a) for a in args]

        def fixed(value: Any) -> Any:
            if value is None:
                return None
            if len(items) != len(value):
                raise ValueError(f"expected {len(items)} items, got {len(value)}")
            return tuple(f(v) for f, v in zip(items, value, strict=True))

        return fixed
    inner = _converter(args[0] if args else Any)
    if inner is _same:

        def plain(value: Any) -> Any:
            return None if value is None else tuple(value)

        return plain

    def each(value: Any) -> Any:
        return None if value is None else tuple(None if v is None else inner(v) for v in value)

    return each
