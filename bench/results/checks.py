"""A results document checked in full before any command reads it: one error naming the JSON path.

bench.spec.codec.from_dict trusts its input (it is also used on what our own worker writes). A results file
given on the command line is outside input: a `params` list, an unknown verdict, a NaN sample or a case id
holding `../` would otherwise surface as a traceback in a report, or worse as a gate that passes. Here every
field is checked against the record's type hints (JSON vocabulary in the messages: table, list, string,
number, integer, boolean, null), then the rules types cannot say: the verdict vocabulary, the schema version
range, unique case ids, names that stay one file name, timing samples that agree with their count.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import re
import types
import typing
from typing import Any

from bench import RESULTS_SCHEMA_VERSION, VERDICT_RULES_VERSION
from bench.results.finite import NOTES_KEY, WORDS
from bench.results.finite import child as _child
from bench.results.measures import TimingStats
from bench.results.records import VERDICTS, Outcome, Results, StepRecord

OLDEST_SCHEMA_VERSION = 1  # the oldest results schema this version reads
STEP_STATUSES = ("pass", "fail", "xfail", "xpass", "error", "not_run", "skip")
# error: the check itself could not be made (the reference could not be built)
OUTCOME_STATUSES = ("pass", "fail", "xfail", "xpass", "error")
MAX_DEPTH = 32  # free-form values (a step's args, a worker block) nested deeper than this are refused
# A scenario name as the loader accepts it; a case id is that name with its parameters in brackets. Neither
# may hold a path separator or start with a dot, so that a file named after it stays in its folder.
SCENARIO_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CASE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=,\[\]-]{0,199}")
VERSION_RE = re.compile(r"\d+(\.\d+){0,3}([a-z]+\d*)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?")


class ResultsInvalid(Exception):
    """One problem in a results document: where (a JSON path such as cases[3].params) and what."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def build(tp: Any, value: Any, where: str = "", depth: int = 0, nulls: dict[str, str] | None = None) -> Any:
    """`value` converted to `tp` (a record class or a type hint), or ResultsInvalid naming the first problem.

    `nulls`: {path: "nan" | "inf" | "-inf"} from the file's `non_finite` notes (bench.results.finite). A noted null
    is read where the field may be null (max_abs_diff, op_time_ms, ...); where a number is required, the
    record cannot be used (the commands compute with it), and the message says what the value was."""
    if depth > MAX_DEPTH:
        raise ResultsInvalid(where, f"nested more than {MAX_DEPTH} levels deep")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if value == {} and getattr(args[0], "EMPTY_IS_NONE", False):
            return None  # as bench.spec.codec.from_dict: {} was how a table typed later said "not recorded"
        return build(args[0], value, where, depth, nulls)
    if value is None and nulls and where in nulls and tp is not Any:
        raise ResultsInvalid(
            where, f"was {nulls[where]} (written as null, see non_finite), where a finite number is required"
        )
    if value is None and tp is not Any:
        raise ResultsInvalid(where, f"expected {_expected(tp)}, got null")
    if tp is Any:
        return _free(value, where, depth)
    if dataclasses.is_dataclass(tp):
        return _record(tp, value, where, depth, nulls)
    if origin is tuple:
        if not isinstance(value, list):
            raise ResultsInvalid(where, f"expected a list, got {json_kind(value)}")
        inner = typing.get_args(tp)[0]
        return tuple(build(inner, v, _child(where, i), depth + 1, nulls) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ResultsInvalid(where, f"expected a table, got {json_kind(value)}")
        _, vt = typing.get_args(tp)
        return {k: build(vt, v, _child(where, k), depth + 1, nulls) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ResultsInvalid(where, f"expected true or false, got {json_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ResultsInvalid(where, f"expected an integer, got {json_kind(value)}")
        if abs(value) >= 2**63:
            raise ResultsInvalid(where, "integer out of range (more than 64 bits)")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ResultsInvalid(where, f"expected a number, got {json_kind(value)}")
        if isinstance(value, int) and abs(value) >= 2**63:
            raise ResultsInvalid(where, "number out of range")
        if not math.isfinite(value):
            raise ResultsInvalid(where, f"expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ResultsInvalid(where, f"expected a string, got {json_kind(value)}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):  # e.g. Verdict: a string from a fixed vocabulary
        if not isinstance(value, str):
            raise ResultsInvalid(where, f"expected a string, got {json_kind(value)}")
        _one_of(value, tuple(m.value for m in tp), where, tp.__name__.lower())
        return value
    raise ResultsInvalid(where, f"cannot check a field of type {tp!r}")  # a record type this module misses


def _expected(tp: Any) -> str:
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
        return "a table"
    if typing.get_origin(tp) is tuple:
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, "a value")


def _free(value: Any, where: str, depth: int) -> Any:
    """A free-form JSON value (a step's args): any shape, but finite and not absurdly deep."""
    if depth > MAX_DEPTH:
        raise ResultsInvalid(where, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ResultsInvalid(where, f"expected a finite number, got {value}")
    # As for a typed integer: no measurement or setting needs more, and the columnar copy's parser
    # (bench.results.fastjson: orjson) would read such an integer back as a float.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise ResultsInvalid(where, "integer out of range (more than 64 bits)")
    if isinstance(value, list):
        return [_free(v, _child(where, i), depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _free(v, _child(where, k), depth + 1) for k, v in value.items()}
    return value


def _record(cls: type, value: Any, where: str, depth: int, nulls: dict[str, str] | None) -> Any:
    if not isinstance(value, dict):
        raise ResultsInvalid(where, f"expected a table, got {json_kind(value)}")
    hints, fields, required = _shape(cls)
    unknown = sorted(set(value) - fields)
    if unknown:
        raise ResultsInvalid(_child(where, unknown[0]), f"unknown field of {cls.__name__}")
    for name in required:
        if name not in value:
            raise ResultsInvalid(_child(where, name), "missing")
    built = {k: build(hints[k], v, _child(where, k), depth + 1, nulls) for k, v in value.items()}
    _rules(cls, built, where)
    return cls(**built)


@functools.cache
def _shape(cls: type) -> tuple[dict[str, Any], frozenset[str], tuple[str, ...]]:
    """A record class's type hints, field names and required fields, worked out once per class:
    typing.get_type_hints evaluates every annotation string again on each call, which was most of the time
    of loading a large results file."""
    fields = dataclasses.fields(cls)
    required = tuple(
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    return typing.get_type_hints(cls), frozenset(f.name for f in fields), required


def _one_of(value: str, allowed: tuple[str, ...], where: str, what: str) -> None:
    if value not in allowed:
        raise ResultsInvalid(where, f"unknown {what} {value[:40]!r}; known: {', '.join(allowed)}")


def _rules(cls: type, f: dict[str, Any], where: str) -> None:
    """What the types cannot say, per record."""
    for path, what in f.get(NOTES_KEY, {}).items():  # Results and CaseResult
        _one_of(what, WORDS, _child(_child(where, NOTES_KEY), path), "non-finite value")
    if cls is TimingStats:
        if not f["samples_ms"]:
            raise ResultsInvalid(_child(where, "samples_ms"), "no timing sample")
        if f["n"] != len(f["samples_ms"]):
            raise ResultsInvalid(
                _child(where, "n"), f"is {f['n']}, but samples_ms holds {len(f['samples_ms'])}"
            )
        # A monotonic clock's difference: a negative one was edited in (and was named "fastest").
        if (low := min((x for x in f["samples_ms"] if x is not None), default=0.0)) < 0:
            raise ResultsInvalid(_child(where, "samples_ms"), f"a negative timing sample ({low:g} ms)")
    elif cls is StepRecord:
        _one_of(f["status"], STEP_STATUSES, _child(where, "status"), "step status")
    elif cls is Outcome:
        _one_of(f["status"], OUTCOME_STATUSES, _child(where, "status"), "outcome status")
    elif cls.__name__ == "CaseResult":
        _one_of(f["verdict"], VERDICTS, _child(where, "verdict"), "verdict")
        if not CASE_ID_RE.fullmatch(f["case_id"]):
            raise ResultsInvalid(_child(where, "case_id"), f"not a safe case id: {f['case_id'][:60]!r}")
        if not SCENARIO_NAME_RE.fullmatch(f["scenario"]):
            raise ResultsInvalid(
                _child(where, "scenario"), f"not a safe scenario name: {f['scenario'][:60]!r}"
            )


def _noted_nulls(data: dict) -> dict[str, str]:
    """{path from the top of the file: what the value was} for the file's own `non_finite` notes and each
    case's (paths inside the case, as its worker wrote them). Malformed notes are left out here (a null they
    name is then a plain null); _rules refuses them with their path."""
    paths: dict[str, str] = {}
    top = data.get(NOTES_KEY)
    if isinstance(top, dict):
        paths.update((k, v) for k, v in top.items() if isinstance(k, str) and v in WORDS)
    cases = data.get("cases")
    for i, case in enumerate(cases if isinstance(cases, list) else ()):
        notes = case.get(NOTES_KEY) if isinstance(case, dict) else None
        if isinstance(notes, dict):
            paths.update(
                (f"cases[{i}].{k}", v) for k, v in notes.items() if isinstance(k, str) and v in WORDS
            )
    return paths


def parse_results(data: Any) -> Results:
    """A Results record from a parsed results.json, or ResultsInvalid naming the first problem."""
    if not isinstance(data, dict):
        raise ResultsInvalid("", f"expected a table at the top, got {json_kind(data)}")
    if "schema_version" not in data or "cases" not in data:
        raise ResultsInvalid("", "not a peft-bench results file (no schema_version / cases)")
    version = data["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ResultsInvalid("schema_version", f"expected an integer, got {json_kind(version)}")
    if version > RESULTS_SCHEMA_VERSION:
        raise ResultsInvalid(
            "schema_version",
            f"{version} is newer than this peft-bench understands ({RESULTS_SCHEMA_VERSION}); upgrade peft-bench",
        )
    if version < OLDEST_SCHEMA_VERSION:
        raise ResultsInvalid(
            "schema_version",
            f"{version} is not a results schema version (this peft-bench reads "
            f"{OLDEST_SCHEMA_VERSION} to {RESULTS_SCHEMA_VERSION})",
        )
    rules = data.get("verdict_rules")
    if isinstance(rules, int) and not isinstance(rules, bool) and rules > VERDICT_RULES_VERSION:
        # Like a newer schema: its verdicts mean what rules this version does not know (an older one is read,
        # and flagged by gate, compare and site).
        raise ResultsInvalid(
            "verdict_rules",
            f"{rules} is newer than this peft-bench judges by ({VERDICT_RULES_VERSION}); upgrade peft-bench",
        )
    suite = data.get("suite_version")
    if isinstance(suite, str) and not VERSION_RE.fullmatch(suite):
        raise ResultsInvalid("suite_version", f"not a version: {suite[:40]!r}")
    results = build(Results, data, nulls=_noted_nulls(data))
    seen: dict[str, int] = {}
    for i, case in enumerate(results.cases):
        if case.case_id in seen:
            raise ResultsInvalid(
                f"cases[{i}].case_id",
                f"{case.case_id!r} is also cases[{seen[case.case_id]}]: case ids are unique",
            )
        seen[case.case_id] = i
    for i, name in enumerate(results.scenario_set):
        if not SCENARIO_NAME_RE.fullmatch(name):
            raise ResultsInvalid(f"scenario_set[{i}]", f"not a safe scenario name: {name[:60]!r}")
    return results
