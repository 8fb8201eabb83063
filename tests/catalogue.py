"""What the bug catalogue's tests share (tests/scenario/test_catalogue*.py, and the report tests that replay a
planted run): a shipped scenario's case by id, the (step, expectation) pairs a run failed, and one case's
result as a results file holds it."""

from __future__ import annotations

from bench.results.environment import collect
from bench.results.records import Results
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.conftest import SCENARIOS


def shipped_case(file_name: str, case_id: str):
    """The case `case_id` of scenarios/`file_name` (StopIteration names neither: the ids are the tests' own)."""
    return next(c for c in expand(load_scenario(SCENARIOS / file_name)) if c.id == case_id)


def failed_outcomes(result) -> list[tuple[int, str]]:
    """(step number, expectation) of every outcome that failed, steps counted from 1 as the report does."""
    return [
        (i, o.expectation) for i, s in enumerate(result.steps, 1) for o in s.outcomes if o.status == "fail"
    ]


def planted_failures(planted, cache_root, monkeypatch) -> list[tuple[int, str]]:
    """Plant a bug (`planted`: file name, case id, plant(monkeypatch)), run the shipped case through the real
    worker path, check that it fails, and return what failed (failed_outcomes)."""
    file_name, case_id, plant = planted
    plant(monkeypatch)
    r = run_case(shipped_case(file_name, case_id), cache_root)
    assert r.verdict == "fail", (r.verdict, r.reason)
    return failed_outcomes(r)


def one_case_results(case, result) -> Results:
    """The results of a run of this one case, as `peft-bench run` would save them (for the report's readers)."""
    return Results(
        schema_version=1,
        suite_version="test",
        created_at="now",
        environment=collect(),
        scenario_set=(case.scenario.name,),
        cases=(result,),
    )
