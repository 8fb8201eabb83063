"""bench.spec.codec builds a record by filling its __dict__ in field order (no __init__ per record): the records it
builds equal what the record's own __init__ builds, field order, defaults, __post_init__ and errors included."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import InitVar, dataclass, field
from pathlib import Path

import pytest

from bench.results.records import CaseResult, Results, Verdict
from bench.spec import codec
from bench.spec.codec import _direct_build, from_dict, to_dict

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "reports" / "baseline", *sorted((REPO / "tests" / "fixtures" / "results").iterdir())]


def _by_init(data: dict, cls: type = Results):
    """The file's records as the codec built them before the direct build: each by its own __init__."""
    codec._converter.cache_clear()
    saved = codec._direct_build
    codec._direct_build = lambda *args: None
    try:
        return from_dict(cls, data)
    finally:
        codec._direct_build = saved
        codec._converter.cache_clear()


@pytest.mark.parametrize("folder", FILES, ids=[p.name for p in FILES])
def test_records_equal_those_their_init_builds_in_field_order(folder):
    data = json.loads((folder / "results.json").read_text())
    results = from_dict(Results, data)
    reference = _by_init(data)
    assert results == reference and to_dict(results) == to_dict(reference)
    assert json.dumps(to_dict(results)) == json.dumps(to_dict(reference))  # the same key order
    for case in results.cases:
        assert list(case.__dict__) == [f.name for f in dataclasses.fields(CaseResult)]
        assert isinstance(case.verdict, Verdict)  # __post_init__ ran
    # Control: a file with one value changed reads as other records.
    data["cases"][0]["reason"] = "changed"
    assert from_dict(Results, data) != reference


@dataclass(frozen=True)
class _Defaults:
    a: int
    b: list = field(default_factory=list)
    c: str = "c"


@dataclass(frozen=True)
class _Checked:
    a: int

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError("negative")


@dataclass(frozen=True)
class _WithInitVar:
    a: int
    scale: InitVar[int] = 1

    def __post_init__(self, scale: int) -> None:
        object.__setattr__(self, "a", self.a * scale)


def test_defaults_post_init_and_errors_are_those_of_init():
    built = from_dict(_Defaults, {"a": 1})
    assert built == _Defaults(1) and list(built.__dict__) == ["a", "b", "c"]
    assert from_dict(_Defaults, {"a": 1}).b is not built.b  # a new list per record, as default_factory gives
    with pytest.raises(ValueError, match="negative"):
        from_dict(_Checked, {"a": -1})
    with pytest.raises(ValueError, match="unknown field"):
        from_dict(_Defaults, {"a": 1, "z": 2})
    with pytest.raises(TypeError, match="missing 1 required"):
        from_dict(_Defaults, {"c": "x"})
    # A class the direct build cannot do is built by its __init__.
    assert _direct_build(_WithInitVar, {}, print) is None
    assert _direct_build(_Defaults, {n: codec._same for n in "abc"}, print) is not None
    assert from_dict(_WithInitVar, {"a": 2}) == _WithInitVar(2)


@dataclass(frozen=True)
class _Inner:
    x: float
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Every:
    """One field of each kind of converter the codec has."""

    f: float
    opt_f: float | None
    opt_s: str | None
    opt_rec: _Inner | None
    recs: tuple[_Inner, ...]
    plain: tuple[int, ...] | None
    table: dict[str, _Inner]
    pair: tuple[str, int]


EVERY = {
    "f": 3,
    "opt_f": 2,
    "opt_s": None,
    "opt_rec": {"x": 1, "tags": ["a"]},
    "recs": [{"x": 2, "tags": []}, {"x": 0.5, "tags": ["b", "c"]}],
    "plain": [1, 2],
    "table": {"k": {"x": 4, "tags": []}},
    "pair": ["p", 1],
}


def test_every_kind_of_field_is_converted_as_init_does():
    built = from_dict(_Every, EVERY)
    reference = _by_init(EVERY, _Every)
    assert built == reference and repr(built) == repr(reference)  # 3 -> 3.0 where the hint says float
    assert isinstance(built.f, float) and isinstance(built.opt_rec.x, float) and built.recs[0].x == 2.0
    nulls = {**EVERY, "opt_f": None, "opt_rec": None, "plain": None}
    assert from_dict(_Every, nulls) == _by_init(nulls, _Every)
    # Control: the same number of keys with one misspelled is refused, naming the unknown field.
    with pytest.raises(ValueError, match="unknown field"):
        from_dict(_Every, {**{k: v for k, v in EVERY.items() if k != "f"}, "g": 3})


def test_a_text_repeated_across_records_is_one_object():
    # A results file repeats a few thousand texts hundreds of thousands of times (a 20,000-case load held
    # 300 MB of copies): the codec keeps one object per distinct text of a str field.
    data = json.loads((REPO / "reports" / "baseline" / "results.json").read_text())
    a, b = data["cases"][0], data["cases"][1]
    rule = a["steps"][1]["output"]["rule_reason"]
    assert rule == b["steps"][1]["output"]["rule_reason"] and len(rule) > 20
    # Control: as parsed, the two cases hold two copies of the text.
    assert rule is not b["steps"][1]["output"]["rule_reason"]
    results = from_dict(Results, data)
    first, second = results.cases[0].steps[1], results.cases[1].steps[1]
    assert first.output.rule_reason is second.output.rule_reason
    assert first.outcomes[0].expectation is second.outcomes[0].expectation  # a str field of a nested record
    # A dict[str, str] (a CPU run's reasons for each missing CUDA figure): its values too.
    reasons = [next(iter(s.memory.unavailable.values())) for s in (first, second)]
    assert reasons[0] == reasons[1] and reasons[0] is reasons[1]


@dataclass(frozen=True)
class _Node:
    """A record that holds its own type: its converter meets itself while it is made."""

    name: str
    children: tuple[_Node, ...] = ()
    parent: _Node | None = None


def test_a_record_holding_its_own_type_is_built_at_every_depth():
    data = {"name": "root", "children": [{"name": "a", "children": [{"name": "a1"}]}, {"name": "b"}]}
    data["parent"] = {"name": "up"}
    built = from_dict(_Node, data)
    assert built == _by_init(data, _Node)
    assert built.children[0].children[0] == _Node("a1") and built.parent == _Node("up")
    assert isinstance(built.children, tuple) and isinstance(built.children[0].children, tuple)
    # Control: an unknown field deep down is refused there, as the record's own __init__ refuses it.
    data["children"][0]["children"][0]["z"] = 1
    with pytest.raises(ValueError, match="_Node: unknown field"):
        from_dict(_Node, data)


def test_float_and_text_items_are_converted_in_place_as_their_converters_do():
    built = from_dict(_Every, {**EVERY, "recs": [{"x": 1, "tags": ["t", None]}], "table": {"k": {"x": True}}})
    assert built.recs[0].x == 1.0 and type(built.recs[0].x) is float
    assert built.recs[0].tags == ("t", None)
    assert built.table["k"].x == 1.0  # a bool is an int: float() as _to_float gives it
    assert built == _by_init(
        {**EVERY, "recs": [{"x": 1, "tags": ["t", None]}], "table": {"k": {"x": True}}}, _Every
    )
