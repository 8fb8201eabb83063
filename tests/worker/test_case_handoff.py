"""The worker is handed its expanded Case, never the scenario file: editing the file mid-run changes nothing,
and every result keeps its case, so a results folder is self-contained."""

from __future__ import annotations

import json

import pytest

from bench.results.stats import slope
from bench.results.store import load
from bench.runner.launch import RunOptions
from bench.runner.resume import resume_selection
from bench.runner.run import run_cases
from bench.scenario import load_scenarios
from bench.spec.cases import Case, expand_all
from tests.conftest import LOAD_A, ONE_ADAPTER_SEED_0, REPO, scenario_toml

SCENARIO = scenario_toml(
    "handoff", [LOAD_A, "forward"], matrix={"compile": ["none", "eager"]}, adapters=ONE_ADAPTER_SEED_0
)


def test_every_shipped_case_round_trips_through_json():
    cases = expand_all(load_scenarios([REPO / "scenarios"]))
    for case in cases:
        again = Case.from_dict(json.loads(json.dumps(case.to_dict())))
        assert again == case and again.id == case.id
        hash(again)  # tuples all the way down, as the loader builds them


def test_editing_the_scenario_during_a_run_changes_nothing(tmp_path, cache_root, write_scenario):
    path = write_scenario(SCENARIO)
    cases = expand_all(load_scenarios([path]))

    def vandal(event, i, n, case, result, elapsed):
        if event == "start" and i == 2:  # the first case is done: break the file for the second
            path.write_text("this is not TOML [")

    out = tmp_path / "out"
    results = run_cases(cases, RunOptions(out_dir=out, cache_root=cache_root), progress=vandal)
    assert [c.verdict for c in results.cases] == ["pass", "pass"], [c.reason for c in results.cases]
    assert [Case.from_dict(c.case) for c in results.cases] == cases

    # The folder alone is enough to resume: the scenario file is gone.
    path.unlink()
    resumed = resume_selection(out)
    assert list(resumed.cases) == cases and not resumed.missing
    assert load(out).cases[0].case == cases[0].to_dict()


def test_slope_is_the_least_squares_fit():
    assert slope([1.0, 3.0, 5.0, 7.0]) == 2.0
    assert slope([5.0, 5.0, 5.0]) == 0.0
    assert slope([1.0, 2.0, 1.0, 2.0]) == pytest.approx(0.2)  # not the first-to-last difference (1/3)
    assert slope([3.0]) == 0.0
