"""A forward on its own input shape (`batch_size` / `seq_len`) and `recompiles` given per compile setting:
what the loader accepts, what it refuses (naming the step and the field), and what each case is left with."""

from __future__ import annotations

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.spec.per_compile import scope_to_compile
from bench.spec.shapes import step_workload
from tests.scenarios import FAST_TIMING, LOAD_A, scenario_toml

BOTH = {"compile": [{"backend": "aot_eager", "dynamic": True}, {"backend": "aot_eager", "dynamic": False}]}
PER_COMPILE = {"aot_eager+dynamic": "== 0", "aot_eager+static": "== 1"}


def _load(write_scenario, steps, matrix=BOTH):
    return load_scenario(write_scenario(scenario_toml("shapes", steps, matrix=matrix, timing=FAST_TIMING)))


def _refused(write_scenario, steps, matrix=BOTH) -> str:
    with pytest.raises(ScenarioError) as info:
        _load(write_scenario, steps, matrix)
    return str(info.value)


def _shaped(**fields):
    return {"op": "forward", **fields, "expect": {"recompiles": PER_COMPILE}}


def test_each_case_gets_the_comparison_of_its_compile_setting(write_scenario):
    s = _load(write_scenario, [LOAD_A, "compile", "forward", _shaped(seq_len=24)])
    step = s.steps[3]
    assert (step.batch_size, step.seq_len) == (None, 24)
    assert step.expect.recompiles is None and len(step.expect.recompiles_by_compile) == 2
    got = {}
    for case in expand(s):
        scoped = scope_to_compile(s, case.compile.label).steps[3].expect
        got[case.compile.label] = (str(scoped.recompiles), scoped.strict, scoped.recompiles_by_compile)
    # dynamic: no recompile allowed, so the step runs under error_on_recompile; static: exactly one
    assert got == {"aot_eager+dynamic": ("== 0", True, ()), "aot_eager+static": ("== 1", False, ())}
    # steps without a table are left as they are
    assert scope_to_compile(s, "aot_eager+static").steps[2] == s.steps[2]


def test_the_step_shape_keeps_the_rest_of_the_workload(write_scenario):
    s = _load(write_scenario, [LOAD_A, "compile", "forward", _shaped(batch_size=3)])
    w = step_workload(s.steps[3], s.workload)
    assert (w.batch_size, w.seq_len, w.seed, w.kind) == (3, s.workload.seq_len, s.workload.seed, "forward")
    assert step_workload(s.steps[2], s.workload) is None  # the plain forward: the workload's own inputs


@pytest.mark.parametrize(
    ("steps", "matrix", "fragments"),
    [
        # a label no case of the matrix has: a typo would leave a case unchecked
        (
            [LOAD_A, "compile", {"op": "forward", "expect": {"recompiles": {"aot_eager+dynamc": "== 0"}}}],
            BOTH,
            ["step 3 (forward)", "expect.recompiles.aot_eager+dynamc", "aot_eager+dynamic, aot_eager+static"],
        ),
        # a compiled setting left without a comparison
        (
            [LOAD_A, "compile", {"op": "forward", "expect": {"recompiles": {"aot_eager+static": "== 1"}}}],
            BOTH,
            ["step 3 (forward)", "no comparison for aot_eager+dynamic"],
        ),
        # an eager-only matrix: nothing to count
        (
            [LOAD_A, {"op": "forward", "expect": {"recompiles": {"none": "== 0"}}}],
            {"compile": ["none"]},
            ["step 2 (forward)", "needs a compiled model"],
        ),
        # a bad comparison inside the table names its key
        (
            [
                LOAD_A,
                "compile",
                {"op": "forward", "expect": {"recompiles": {**PER_COMPILE, "aot_eager+static": "~ 1"}}},
            ],
            BOTH,
            ["expect.recompiles.aot_eager+static", "expected a comparison"],
        ),
        # the workload's own shape is no shape change
        (
            [LOAD_A, {"op": "forward", "seq_len": 16}],
            {"compile": ["none"]},
            ["step 2 (forward)", "workload's own shape"],
        ),
        ([LOAD_A, {"op": "forward", "seq_len": 0}], {"compile": ["none"]}, ["seq_len", "between 1 and"]),
        # a shape is forward's only
        ([LOAD_A, {"op": "generate", "seq_len": 24}], {"compile": ["none"]}, ["seq_len", "unknown key"]),
        (
            [{**LOAD_A, "seq_len": 24}],
            {"compile": ["none"]},
            ["step 1 (load_adapter)", "seq_len", "unknown key"],
        ),
    ],
)
def test_refused_with_the_step_and_the_field(write_scenario, steps, matrix, fragments):
    message = _refused(write_scenario, steps, matrix)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_an_empty_table_is_refused(write_scenario):
    message = _refused(write_scenario, [LOAD_A, "compile", {"op": "forward", "expect": {"recompiles": {}}}])
    assert "expect.recompiles" in message and "empty table" in message
