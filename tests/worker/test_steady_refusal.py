"""Steady state and refusals (issue 10, item 7), each rule with the planted bug it catches: the last timed
call is checked too, a refused op must leave the model unchanged, and a count on a step that made no model
call is not evaluated."""

from __future__ import annotations

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.conftest import MINIMAL

# conftest's MINIMAL, eager and without its compile step: load_adapter, forward.
EAGER = MINIMAL.replace('compile = ["aot_eager"]', 'compile = ["none"]').replace(
    '[[steps]]\nop = "compile"\n\n', ""
)
STEADY = EAGER + "\n[timing]\nwarmup = 1\nmin_rounds = 3\nmin_time_s = 0.0\n"
# Two adapters, b active; then a set_adapter the library must refuse.
REFUSAL = (
    EAGER.replace("[[steps]]", "[adapters.b]\nrank = 4\nseed = 2\n\n[[steps]]", 1)
    + """
[[steps]]
op = "load_adapter"
adapter = "b"
[[steps]]
op = "set_adapter"
names = ["missing"]
expect = { raises = "ValueError" }
"""
)


def _only(path):
    (case,) = expand(load_scenario(path))
    return case


def _outcomes(step):
    return {o.expectation: o for o in step.outcomes}


def test_the_last_timed_call_is_checked_too(cache_root, write_scenario):
    r = run_case(_only(write_scenario(STEADY)), cache_root)
    assert r.verdict == "pass", r.reason
    forward = r.steps[1]
    assert forward.steady_output is not None and forward.steady_output.matches
    assert _outcomes(forward)["steady_state_matches"].status == "pass"


def test_an_output_that_goes_wrong_after_the_first_call_is_caught(cache_root, write_scenario, monkeypatch):
    """Planted: every model call after the forward step's first returns shifted logits (a stale cache that
    breaks on reuse). The first call matches, so only the steady-state check can see it."""
    from bench.engine.subject import Subject

    real = Subject.forward
    calls = []

    def drifting(self):
        calls.append(1)
        out = real(self)
        return out + 1.0 if len(calls) > 2 else out  # call 1: load's check, call 2: the first forward

    monkeypatch.setattr(Subject, "forward", drifting)
    r = run_case(_only(write_scenario(STEADY)), cache_root)
    assert r.verdict == "fail"
    forward = r.steps[1]
    assert _outcomes(forward)["matches_reference"].status == "pass"  # the first call alone sees nothing
    assert r.reason.startswith(
        "step 2 (forward): steady_state_matches: the last timed call vs fresh reference"
    )


def test_a_refused_op_is_followed_by_a_check_of_the_previous_state(cache_root, write_scenario):
    r = run_case(_only(write_scenario(REFUSAL)), cache_root)
    assert r.verdict == "pass", r.reason
    refused = r.steps[3]
    out = _outcomes(refused)
    assert out["raises"].status == "pass"
    assert out["refusal_leaves_state"].status == "pass"
    assert "b=b" in refused.output.reference_state and "active=[b]" in refused.output.reference_state


def test_an_op_that_raises_after_half_changing_the_model_is_caught(cache_root, write_scenario, monkeypatch):
    """Planted: set_adapter activates another adapter, then raises the ValueError the step expects. The
    `raises` expectation holds; only the model call after the refusal shows the model changed."""
    from bench.ops.adapters import SetAdapter

    def half(self, subject, step, adapters, locations):
        subject.model.set_adapter("a")
        raise ValueError("planted: unknown adapter, after activating 'a'")

    monkeypatch.setattr(SetAdapter, "apply", half)
    r = run_case(_only(write_scenario(REFUSAL)), cache_root)
    assert r.verdict == "fail"
    out = _outcomes(r.steps[3])
    assert out["raises"].status == "pass"
    assert out["refusal_leaves_state"].status == "fail"
    assert "a refused op must leave the model unchanged" in r.reason


# MINIMAL's compile step (step 2), with an expectation put on it.
COUNT_ON = MINIMAL.replace('op = "compile"', 'op = "compile"\n{compile_expect}')


@pytest.mark.parametrize("key", ["recompiles", "graph_breaks"])
def test_a_count_on_a_step_without_a_model_call_is_refused(write_scenario, key):
    path = write_scenario(COUNT_ON.format(compile_expect=f'expect = {{ {key} = "== 0" }}'))
    with pytest.raises(ScenarioError, match=f"expect.{key}: a compile step makes no model call") as info:
        load_scenario(path)
    assert "step 2 (compile)" in str(info.value)
    load_scenario(write_scenario(COUNT_ON.format(compile_expect="")))  # the control: without it, it loads


def test_a_count_where_no_call_was_made_is_not_evaluated():
    """decide() on a compiled step whose op raised before any call: a '== 0' that 0 counted frames would
    satisfy is not a pass; it is left out with a note. The same run with a call made is counted."""
    from bench.results.measures import CompileStats
    from bench.spec.counts import CountBound
    from bench.spec.schema import Expectations, Step
    from bench.spec.state import AdapterState
    from bench.worker.decide import decide
    from bench.worker.facts import Evidence, StepRun

    step = Step(index=2, op="set_adapter", names=("x",), expect=Expectations(recompiles=CountBound("==", 0)))
    comp = CompileStats(recompiles=0, frame_compiles=0, graph_breaks=0, unique_graphs=0)
    no_call = StepRun(compiled=True, op_error=ValueError("planted"))
    record = decide({}, step, no_call, None, comp, True, AdapterState(), Evidence())
    assert "recompiles" not in _outcomes(record)
    assert any("not evaluated: the step made no model call" in n for n in record.notes)
    called = StepRun(compiled=True, called_model=True)
    record = decide({}, step, called, None, comp, True, AdapterState(), Evidence())
    assert _outcomes(record)["recompiles"].status == "pass"
