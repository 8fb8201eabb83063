"""Commands on large results stay bounded: a multi-MB reason, hundreds of failing cases, hundreds of findings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.judge.compare import compare
from bench.report.comparison import MAX_ROWS, comparison_text
from bench.report.data import MAX_TABLE_ROWS
from bench.results.store import load, save

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline" / "results.json"


def _copies(n: int, verdict: str | None = None, reason: str | None = None):
    base = load(BASELINE)
    cases = []
    for i in range(n):
        c = base.cases[i % len(base.cases)]
        name = f"s{i:05d}-{c.scenario}"
        case = {**c.case, "scenario": {**c.case["scenario"], "name": name}}
        c = dataclasses.replace(c, case_id=name + c.case_id[len(c.scenario) :], scenario=name, case=case)
        if verdict:
            c = dataclasses.replace(c, verdict=verdict, reason=reason or f"reason {i}")
        cases.append(c)
    return dataclasses.replace(base, cases=tuple(cases), scenario_set=())


@pytest.mark.slow
def test_a_multi_megabyte_reason_keeps_the_report_small(tmp_path, cli):
    huge = "x" * 5_000_000
    results = _copies(3)
    one = dataclasses.replace(results.cases[0], verdict="fail", reason=f"step 2: {huge}")
    save(tmp_path, dataclasses.replace(results, cases=(one, *results.cases[1:])))
    r = cli("report", tmp_path)
    assert r.returncode == 0, r.stderr
    md, html = (tmp_path / "report.md").stat().st_size, (tmp_path / "report.html").stat().st_size
    assert md < 200_000 and html < 2_000_000, (md, html)
    assert "more characters in results.json" in (tmp_path / "report.md").read_text()
    assert len(load(tmp_path).cases[0].reason) > 5_000_000  # the full text is kept where it was


def test_a_short_reason_is_shown_whole(tmp_path, cli):
    # Control for the test above: nothing is cut where nothing is long.
    results = _copies(2)
    one = dataclasses.replace(results.cases[0], verdict="fail", reason="step 2: recompiles 1 > 0")
    save(tmp_path, dataclasses.replace(results, cases=(one, *results.cases[1:])))
    assert cli("report", tmp_path, "--format", "md").returncode == 0
    text = (tmp_path / "report.md").read_text()
    assert "step 2: recompiles 1 > 0" in text and "more characters" not in text


def test_hundreds_of_failing_cases_are_listed_up_to_the_cap(tmp_path, cli):
    n = MAX_TABLE_ROWS + 50
    save(tmp_path, _copies(n, verdict="fail"))
    r = cli("report", tmp_path, "--format", "md")
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "report.md").read_text()
    assert f"... and 50 more of {n} not listed here" in text
    assert f"reason {MAX_TABLE_ROWS - 1}" in text and f"reason {MAX_TABLE_ROWS + 1}" not in text
    assert len(r.stdout.splitlines()) < 40  # cases without a script: the first few named, then a count


def test_compare_lists_the_first_findings_and_counts_the_rest():
    base = _copies(MAX_ROWS + 30)
    worse = dataclasses.replace(
        base, cases=tuple(dataclasses.replace(c, verdict="fail", reason="worse") for c in base.cases)
    )
    text = comparison_text(compare(base, worse))
    assert "more finding(s) not listed" in text
    assert len(text.splitlines()) < MAX_ROWS + 20
    small = comparison_text(compare(_copies(5), dataclasses.replace(worse, cases=worse.cases[:5])))
    assert "not listed" not in small  # control
