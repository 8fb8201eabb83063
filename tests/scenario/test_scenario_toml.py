"""The tests' scenario builder (tests/scenarios.py): it writes exactly the TOML values it is given, and what it
writes is a scenario file like any other, accepted or refused by the loader on its merits."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from tests.conftest import FAST_TIMING, LOAD_A, scenario_toml
from tests.scenarios import toml_value

AWKWARD = {
    "text": 'a "quote", a \\ backslash, a\nnewline, a\ttab, DEL \x7f, NUL \x00, é and 😀',
    "ints": [0, -3, 2**40],
    "floats": [0.0, 1e-9, -2.5, 1e300, math.inf, -math.inf],
    "flags": [True, False],
    "mixed": [1, "a", [2.5, []]],
    "table": {"key": 1, "an odd key": "v", "empty": {}, "nested": {"x": [1]}},
}


def test_every_value_reads_back_as_written():
    assert tomllib.loads(f"v = {toml_value(AWKWARD)}")["v"] == AWKWARD
    assert math.isnan(tomllib.loads(f"v = {toml_value(math.nan)}")["v"])


def test_control_what_the_escaping_is_for():
    """JSON's escapes alone (non-ASCII kept as is) leave DEL raw, which TOML refuses: the round trip above
    can fail."""
    with pytest.raises(tomllib.TOMLDecodeError, match="Illegal character"):
        tomllib.loads(f"v = {json.dumps(chr(0x7F), ensure_ascii=False)}")
    with pytest.raises(TypeError, match="no TOML value for PosixPath"):
        toml_value(Path("/tmp"))  # a path is written as str(path), never guessed at
    with pytest.raises(TypeError, match="NoneType"):
        toml_value({"a": None})  # TOML has no null


def test_the_scenario_is_the_tables_it_was_given():
    text = scenario_toml(
        "built",
        [LOAD_A, {"op": "forward", "expect": {"recompiles": "== 0"}}],
        scenario={"tags": ["t"], "timeout_s": 60},
        matrix={"precision": ["fp32", "bf16"], "compile": ["none"]},
        timing=FAST_TIMING,
        tables={"workload": {"seq_len": 8}},
        adapters={"a": {"rank": 4, "seed": 1}, "odd-key_2": {"rank": 8}},
        extra='name = "slot"\n',  # after the last step: its field
    )
    assert tomllib.loads(text) == {
        "scenario": {"name": "built", "model": "builtin:tiny-llama", "tags": ["t"], "timeout_s": 60},
        "matrix": {"precision": ["fp32", "bf16"], "compile": ["none"]},
        "timing": {"warmup": 0, "min_rounds": 1, "min_time_s": 0.0},
        "workload": {"seq_len": 8},
        "adapters": {"a": {"rank": 4, "seed": 1}, "odd-key_2": {"rank": 8}},
        "steps": [
            {"op": "load_adapter", "adapter": "a"},
            {"op": "forward", "expect": {"recompiles": "== 0"}, "name": "slot"},
        ],
    }
    # A table given as None is left out, for the loader's default.
    bare = tomllib.loads(scenario_toml("bare", ["forward"], matrix=None, adapters={}))
    assert bare == {"scenario": {"name": "bare", "model": "builtin:tiny-llama"}, "steps": [{"op": "forward"}]}


def test_the_loader_reads_what_it_builds(write_scenario):
    path = write_scenario(
        scenario_toml("loaded", [LOAD_A, "forward"], timing=FAST_TIMING, tables={"workload": {"seq_len": 8}})
    )
    s = load_scenario(path)
    assert (s.name, s.model, s.source_file) == ("loaded", "builtin:tiny-llama", str(path))
    assert [c.label for c in s.matrix.compile] == ["none"]
    assert (s.timing.warmup, s.timing.min_rounds, s.timing.min_time_s) == (0, 1, 0.0)
    assert s.workload.seq_len == 8
    ((key, rank, seed),) = [(a.key, a.rank, a.seed) for a in s.adapters]
    assert (key, rank, seed) == ("a", 4, 1)
    assert [(st.op, st.adapter) for st in s.steps] == [("load_adapter", "a"), ("forward", None)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"adapters": {"a": {"rank": 0}}}, "adapters.a.rank"),
        ({"matrix": {"compile": ["nonee"]}}, "matrix.compile[0]"),
        ({"timing": {**FAST_TIMING, "warmup": "0"}}, "timing.warmup"),
    ],
)
def test_control_a_bad_value_is_refused_naming_the_file_and_field(write_scenario, change, field):
    path = write_scenario(scenario_toml("refused", [LOAD_A], **change))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert err.value.source == str(path) and field in str(err.value), str(err.value)
