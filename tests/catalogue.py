"""What the bug catalogue's tests share (tests/scenario/test_catalogue*.py): a shipped scenario's case by id,
and the (step, expectation) pairs a run failed."""

from __future__ import annotations

from bench.scenario import load_scenario
from bench.spec.cases import expand
from tests.conftest import SCENARIOS


def shipped_case(file_name: str, case_id: str):
    """The case `case_id` of scenarios/`file_name` (StopIteration names neither: the ids are the tests' own)."""
    return next(c for c in expand(load_scenario(SCENARIOS / file_name)) if c.id == case_id)


def failed_outcomes(result) -> list[tuple[int, str]]:
    """(step number, expectation) of every outcome that failed, steps counted from 1 as the report does."""
    return [
        (i, o.expectation) for i, s in enumerate(result.steps, 1) for o in s.outcomes if o.status == "fail"
    ]
