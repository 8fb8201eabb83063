"""A forward on its own input shape (`batch_size` / `seq_len`) stays out of "Which to use": its latency is of
another shape than the workload's the row names."""

from __future__ import annotations

from dataclasses import replace

from bench.report import answers, case_facts
from bench.results.store import load
from tests.conftest import REPO

BASELINE = REPO / "reports" / "baseline"


def _with_extra_step(results, args: dict):
    """The first case with a measured adapter-active step, given one more such step: its copy with `args` and
    every timed call 100 times slower (a larger shape's latency)."""
    case = next(
        c
        for c in results.cases
        if case_facts._measured(c)[0] and answers.choices(replace(results, cases=(c,)))
    )
    step = case_facts._measured(case)[0][-1]
    slow = replace(step.timing, samples_ms=tuple(100 * x for x in step.timing.samples_ms))
    extra = replace(step, index=len(case.steps) + 1, args={**step.args, **args}, timing=slow)
    one = replace(case, steps=(*case.steps, extra))
    return replace(results, cases=(case,)), replace(results, cases=(one,))


def _row(results):
    (row,) = answers.choices(results)
    return row.latency_steps, row.latency.estimate


def test_a_step_on_its_own_shape_is_left_out_of_the_workload_latency():
    before, after = _with_extra_step(load(BASELINE), {"batch_size": 3, "seq_len": 24})
    assert _row(after) == _row(before)


def test_the_same_step_on_the_workload_shape_is_pooled():
    # negative control: without the shape fields the slow step counts, and moves the median
    before, after = _with_extra_step(load(BASELINE), {})
    (steps_before, latency_before), (steps_after, latency_after) = _row(before), _row(after)
    assert steps_after == steps_before + 1 and latency_after > latency_before
