"""JSON round trip of the suite's frozen dataclass records: plain data out, typed records back in.

Kept below every record module (cases, results, worker specs) so that any of them can be written and read
without importing the others.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
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


def _text(value: Any) -> Any:
    # One object per distinct text: a results file repeats the same few thousand texts (outcome names and
    # statuses, rules, "no CUDA device" reasons) hundreds of thousands of times, and the parser makes each one
    # anew: 300 MB of copies in a 20,000-case load. sys.intern's table holds no text longer than its last user.
    return sys.intern(value) if type(value) is str else value


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
    return _to_float if tp is float else _text if tp is str else _same


def _record_converter(cls: type) -> Callable[[Any], Any]:
    hints = typing.get_type_hints(cls)
    names = frozenset(f.name for f in dataclasses.fields(cls))
    fields: dict[str, Callable[[Any], Any]] = {}
    direct = _direct_build(cls)

    def record(value: Any) -> Any:
        if value is None:
            return None
        if not fields:  # filled at first use: a record may hold its own type (a recursive hint)
            fields.update((k, _converter(hints[k])) for k in names)
        if direct is not None:
            built = direct(value, fields)
            if built is not None:
                return built
        unknown = value.keys() - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**{k: fields[k](v) for k, v in value.items()})

    return record


def _direct_build(cls: type) -> Callable[[Any, dict], Any] | None:
    """A builder that fills a frozen record's __dict__ in field order (what its __init__ would leave there,
    defaults included) without the __init__'s one object.__setattr__ per field, a third of the time of
    loading a large results file; None for a class it cannot build so (slots, a field left out of __init__).
    The builder returns None where the data has an unknown or lacks a required field: then the record's own
    __init__ is called, and raises as it always did."""
    initvar = getattr(dataclasses, "_FIELD_INITVAR", None)  # an InitVar is passed to __post_init__: not here
    if (
        hasattr(cls, "__slots__")
        or not cls.__dataclass_params__.init
        or not all(f.init for f in dataclasses.fields(cls))
        or initvar is None
        or any(f._field_type is initvar for f in cls.__dataclass_fields__.values())
    ):
        return None
    missing = dataclasses.MISSING
    spec = [(f.name, f.default, f.default_factory) for f in dataclasses.fields(cls)]
    post = getattr(cls, "__post_init__", None)
    new = object.__new__

    def build(value: Any, fields: dict[str, Callable[[Any], Any]]) -> Any:
        out = {}
        found = 0
        for name, default, factory in spec:
            if name in value:
                out[name] = fields[name](value[name])
                found += 1
            elif factory is not missing:
                out[name] = factory()
            elif default is not missing:
                out[name] = default
            else:
                return None
        if found != len(value):
            return None
        obj = new(cls)
        obj.__dict__.update(out)
        if post is not None:
            post(obj)
        return obj

    return build


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
        # Every converter passes None through as None, so map needs no test per item (timing samples are
        # most of the items a results file holds).
        return None if value is None else tuple(map(inner, value))

    return each
