"""The JSON Schema (draft 2020-12) of results.json, generated from the frozen dataclasses of
bench.results.records, for consumers outside Python (`peft-bench schema`, docs/results.schema.json).

Generated from the same type hints the reader checks (bench.results.checks), so it cannot drift from the code:
a field with no default is required (files written before a field existed lack only fields with defaults),
an unknown field is refused (`additionalProperties: false`, as the reader refuses it), `X | None` may be
null, `tuple[X, ...]` is an array, `dict[str, X]` an object of X. The vocabularies the reader checks beyond
types (verdicts, step and outcome statuses) are enums. A record typed later that older files wrote as `{}`
(EMPTY_IS_NONE) accepts `{}` too.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any

from bench import RESULTS_SCHEMA_VERSION
from bench.results.checks import OUTCOME_STATUSES, STEP_STATUSES
from bench.results.records import Outcome, Results, StepRecord

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
# Vocabularies the reader checks on plain `str` fields: (record, field) -> allowed values.
ENUMS: dict[tuple[type, str], tuple[str, ...]] = {
    (StepRecord, "status"): STEP_STATUSES,
    (Outcome, "status"): OUTCOME_STATUSES,
}
_PLAIN = {str: "string", int: "integer", float: "number", bool: "boolean"}


def results_schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    root = _record(Results, defs)
    return {
        "$schema": SCHEMA_URI,
        "$id": f"peft-bench/results-v{RESULTS_SCHEMA_VERSION}.schema.json",
        "title": "peft-bench results.json",
        "description": f"results schema version {RESULTS_SCHEMA_VERSION} (docs/results-schema.md)",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def _record(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props, required = {}, []
    for f in dataclasses.fields(cls):
        props[f.name] = _enum(cls, f.name) or _type(hints[f.name], defs)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    doc = " ".join((cls.__doc__ or "").split())
    if doc and not doc.startswith(f"{cls.__name__}("):  # a dataclass without a docstring gets its signature
        out["description"] = doc
    return out


def _enum(cls: type, name: str) -> dict[str, Any] | None:
    values = ENUMS.get((cls, name))
    return {"type": "string", "enum": list(values)} if values else None


def _ref(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    if cls.__name__ not in defs:
        defs[cls.__name__] = {}  # reserved first: a record may refer to itself
        defs[cls.__name__] = _record(cls, defs)
    return {"$ref": f"#/$defs/{cls.__name__}"}


def _type(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        options = [_type(a, defs) for a in args]
        if len(args) == 1 and getattr(args[0], "EMPTY_IS_NONE", False):
            options.append({"type": "object", "maxProperties": 0})  # {}: "not recorded" in older files
        if type(None) in typing.get_args(tp):
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if dataclasses.is_dataclass(tp):
        return _ref(tp, defs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if origin is tuple:
        args = typing.get_args(tp)
        if args and args[-1] is not Ellipsis:
            items = [_type(a, defs) for a in args]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
        return {"type": "array", "items": _type(args[0], defs) if args else {}}
    if origin is dict:
        _, vt = typing.get_args(tp)
        return {"type": "object", "additionalProperties": _type(vt, defs)}
    if tp is Any:
        return {}
    if tp in _PLAIN:
        return {"type": _PLAIN[tp]}
    raise TypeError(f"no JSON Schema for {tp!r}: add it to bench.results.json_schema")


def schema_text() -> str:
    """The schema as the file docs/results.schema.json holds it."""
    return json.dumps(results_schema(), indent=2) + "\n"
