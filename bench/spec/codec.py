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

intern = sys.intern

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
        inner = _converter(args[0])
        if not getattr(args[0], "EMPTY_IS_NONE", False):
            return inner  # every converter passes None through as None: no wrapper call per value

        def optional(value: Any) -> Any:
            if value is None or value == {}:
                return None  # {}: a table typed later, where {} was its "not recorded" (TimingPolicy)
            return inner(value)

        return optional
    if dataclasses.is_dataclass(tp):
        return _record_converter(tp)
    if origin is tuple:
        return _tuple_converter(typing.get_args(tp))
    if origin is dict:
        return _mapping_converter(_converter(typing.get_args(tp)[1]))
    return _to_float if tp is float else _text if tp is str else _same


# The records whose converter is being made, each with the cell its converter goes into once made: a record
# that holds its own type (a recursive hint) meets itself while its fields' converters are made. Empty
# between calls.
_making: dict[type, list[Callable[[Any], Any]]] = {}


def _record_converter(cls: type) -> Callable[[Any], Any]:
    if cls in _making:
        cell = _making[cls]
        return lambda value: cell[0](value)
    cell = _making[cls] = []
    try:
        hints = typing.get_type_hints(cls)
        fields = {f.name: _converter(hints[f.name]) for f in dataclasses.fields(cls)}
    finally:
        del _making[cls]

    def by_init(value: Any) -> Any:
        if value is None:
            return None
        unknown = value.keys() - fields.keys()
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**{k: fields[k](v) for k, v in value.items()})

    cell.append(_direct_build(cls, fields, by_init) or by_init)
    return cell[0]


def _direct_build(
    cls: type, fields: dict[str, Callable[[Any], Any]], fallback: Callable[[Any], Any]
) -> Callable[[Any], Any] | None:
    """A builder that fills a frozen record's __dict__ in field order (what its __init__ would leave there,
    defaults included) without the __init__'s one object.__setattr__ per field; None for a class it cannot
    build so (slots, a field left out of __init__, an InitVar).

    It is made as source text, one line per field, as dataclasses makes an __init__: a 20,000-case results
    file holds about a million records and eleven million values, and a loop over each record's fields, with
    a call per str or float value, cost more than building the records. Data with an unknown field or
    without a required one goes to `fallback`, the record's own __init__, which raises as it always did."""
    initvar = getattr(dataclasses, "_FIELD_INITVAR", None)  # an InitVar is passed to __post_init__: not here
    if (
        hasattr(cls, "__slots__")
        or not cls.__dataclass_params__.init
        or not all(f.init for f in dataclasses.fields(cls))
        or initvar is None
        or any(f._field_type is initvar for f in cls.__dataclass_fields__.values())
        or not all(name.isidentifier() for name in fields)  # the only text of ours the source is made of
    ):
        return None
    missing = dataclasses.MISSING
    post = getattr(cls, "__post_init__", None)
    scope: dict[str, Any] = {
        "new": object.__new__,
        "cls": cls,
        "post": post,
        "fallback": fallback,
        "intern": intern,
        "NAMES": frozenset(fields),
        "REQUIRED": frozenset(
            f.name for f in dataclasses.fields(cls) if f.default is missing and f.default_factory is missing
        ),
    }
    lines = []
    for i, f in enumerate(dataclasses.fields(cls)):
        convert, key = fields[f.name], repr(f.name)
        scope[f"c{i}"], scope[f"d{i}"], scope[f"f{i}"] = convert, f.default, f.default_factory
        # _text and _to_float written out: the same test as theirs, without a call per value.
        got = {
            _same: f"value[{key}]",
            _text: f"(intern(x) if type(x := value[{key}]) is str else x)",
            _to_float: f"(float(x) if isinstance(x := value[{key}], int) else x)",
        }.get(convert, f"c{i}(value[{key}])")
        if f.default_factory is not missing:
            got = f"{got} if {key} in value else f{i}()"
        elif f.default is not missing:
            got = f"value.get({key}, d{i})" if convert is _same else f"{got} if {key} in value else d{i}"
        lines.append(f"        {key}: {got},")
    source = [
        "def build(value):",
        "    if value is None:",
        "        return None",
        "    keys = value.keys()",
        "    if not (keys <= NAMES and REQUIRED <= keys):",
        "        return fallback(value)",
        "    obj = new(cls)",
        "    obj.__dict__.update({",
        *lines,
        "    })",
        *(["    post(obj)"] if post is not None else []),
        "    return obj",
    ]
    # Our own text: a dataclass's field names (identifiers), each written with repr(); no value read from a
    # file is ever part of it, values reach the builder only as its argument (tests/runner/test_safety.py).
    exec(compile("\n".join(source), f"<codec: build {cls.__qualname__}>", "exec"), scope)  # noqa: S102
    return scope["build"]


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

    # Floats and texts tested in place, as _to_float and _text test them: timing samples are most of the items
    # a results file holds, and a call per item was a tenth of its load.
    if inner is _to_float:

        def floats(value: Any) -> Any:
            return None if value is None else tuple([float(x) if isinstance(x, int) else x for x in value])

        return floats
    if inner is _text:

        def texts(value: Any) -> Any:
            return None if value is None else tuple([intern(x) if type(x) is str else x for x in value])

        return texts

    def each(value: Any) -> Any:
        # Every converter passes None through as None, so map needs no test per item.
        return None if value is None else tuple(map(inner, value))

    return each


def _mapping_converter(vt: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A dict's values converted (a new dict, never the data's own: a caller may change its data after)."""
    if vt is _same:
        return lambda value: None if value is None else dict(value)
    if vt is _text:  # tested in place, as _text tests it (a CPU run's reasons for each missing CUDA figure)

        def texts(value: Any) -> Any:
            return (
                None if value is None else {k: intern(v) if type(v) is str else v for k, v in value.items()}
            )

        return texts

    def mapping(value: Any) -> Any:
        return None if value is None else {k: vt(v) for k, v in value.items()}

    return mapping
