"""Eager twins are found by index (one pass over the run), with the answers the old scan of the run gave."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.judge.figures import eager_index, eager_twin
from bench.results.store import load

BASELINE = Path(__file__).resolve().parents[2] / "reports" / "baseline" / "results.json"


def _scan(case, results):
    """The quadratic search eager_twin replaced, kept here as the reference."""
    if case.params.get("compile") == "none":
        return None
    want = {**case.params, "compile": "none"}
    return next((c for c in results.cases if c.scenario == case.scenario and c.params == want), None)


def test_eager_twin_by_index_agrees_with_a_scan_of_the_run():
    base = load(BASELINE)
    cases = []
    for i, c in enumerate(base.cases):
        cases.append(c)
        if i % 2 == 0:  # every other case gets an eager twin, its params in another order
            params = dict(reversed(list({**c.params, "compile": "none"}.items())))
            cases.append(dataclasses.replace(c, case_id=c.case_id + "-eager", params=params))
    run = dataclasses.replace(base, cases=tuple(cases))
    index = eager_index(run)
    found = [eager_twin(c, index) for c in run.cases]
    assert found == [_scan(c, run) for c in run.cases]
    assert sum(t is not None for t in found) == 3  # control: some twins exist, and some cases have none
