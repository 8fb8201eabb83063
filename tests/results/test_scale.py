"""Results at scale: the columnar copy beside results.json (used only while it matches), the U test without
scipy's per-call cost, and messages and reports that stay bounded however many cases or however long a reason."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bench import RESULTS_SCHEMA_VERSION, __version__
from bench.errors import BenchInputError
from bench.results import columnar
from bench.results.environment import library_versions
from bench.results.shards import Source, merge
from bench.results.stats import mann_whitney_u
from bench.results.store import load, save
from bench.runner.resume import finished_run
from bench.spec.codec import to_dict

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline" / "results.json"


def _copies(n: int, **changes):
    """The baseline run's cases copied n times over, each copy its own scenario (distinct case ids)."""
    base = load(BASELINE)
    cases = []
    for i in range(n):
        c = base.cases[i % len(base.cases)]
        name = f"s{i:05d}-{c.scenario}"
        case = {**c.case, "scenario": {**c.case["scenario"], "name": name}} if c.case else {}
        cases.append(
            dataclasses.replace(c, case_id=name + c.case_id[len(c.scenario) :], scenario=name, case=case)
        )
    return dataclasses.replace(base, **{"cases": tuple(cases), "scenario_set": (), **changes})


def test_save_writes_a_columnar_copy_that_load_reads_back_the_same(tmp_path):
    results = _copies(12)
    save(tmp_path, results)
    assert (tmp_path / columnar.COLUMNAR_FILE).is_file()
    col = columnar.read(tmp_path / "results.json")
    assert col is not None and col.rows == 12
    assert list(col.frame(("case_id",))["case_id"]) == [c.case_id for c in results.cases]
    from_json = json.loads((tmp_path / "results.json").read_text())
    assert to_dict(load(tmp_path)) == from_json  # what the columnar path gives is the file's content


def test_the_columnar_copy_is_what_load_reads_while_it_matches(tmp_path):
    # Negative control for the test below: a copy with another header but the right fingerprint is read.
    results = _copies(3)
    save(tmp_path, results)
    doc = json.loads((tmp_path / "results.json").read_text())
    cases = doc.pop("cases")
    doc["created_at"] = "marker-from-the-columnar-copy"
    columnar.write(tmp_path, doc, ((c, json.dumps(c)) for c in cases))
    assert load(tmp_path).created_at == "marker-from-the-columnar-copy"


def test_a_hand_edited_results_json_is_never_shadowed_by_a_stale_copy(tmp_path):
    results = _copies(3)
    save(tmp_path, results)
    path = tmp_path / "results.json"
    before = os.stat(path)
    text = path.read_text()
    assert '"verdict": "pass"' in text
    # Same size, same mtime: only the digest in the fingerprint can tell.
    path.write_text(text.replace('"verdict": "pass"', '"verdict": "fail"', 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert columnar.read(path) is None
    assert load(tmp_path).cases[0].verdict == "fail"


def test_a_broken_or_foreign_columnar_copy_falls_back_to_the_json(tmp_path):
    save(tmp_path, _copies(2))
    (tmp_path / columnar.COLUMNAR_FILE).write_bytes(b"not parquet")
    assert columnar.read(tmp_path / "results.json") is None
    assert len(load(tmp_path).cases) == 2


def test_an_invalid_header_in_the_copy_is_refused_like_the_json(tmp_path):
    save(tmp_path, _copies(2))
    doc = json.loads((tmp_path / "results.json").read_text())
    cases = doc.pop("cases")
    doc["schema_version"] = RESULTS_SCHEMA_VERSION + 1
    columnar.write(tmp_path, doc, ((c, json.dumps(c)) for c in cases))
    with pytest.raises(BenchInputError, match="newer than this peft-bench"):
        load(tmp_path)


def test_u_test_agrees_with_scipy_on_random_samples():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    for i in range(200):
        x = np.round(rng.lognormal(0, 0.3, rng.integers(5, 60)), 2)  # rounded: ties
        y = np.round(rng.lognormal(0.04 * (i % 5), 0.3, rng.integers(5, 60)), 2)
        t = mann_whitney_u(list(x), list(y))
        for alternative, p in (("two-sided", t.p_two_sided), ("greater", t.p_greater), ("less", t.p_less)):
            ref = mannwhitneyu(x, y, alternative=alternative, method="asymptotic", use_continuity=True)
            assert p == pytest.approx(min(1.0, ref.pvalue), abs=1e-12), alternative
        assert t.u_x == pytest.approx(float(mannwhitneyu(x, y, method="asymptotic").statistic))
    assert mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]).p_less < 0.05  # control: a clear difference


def _finished(tmp_path, **changes):
    here = _copies(6)
    env = dataclasses.replace(here.environment, libraries=library_versions())
    fields = {"environment": env, "suite_version": __version__, "schema_version": RESULTS_SCHEMA_VERSION}
    results = dataclasses.replace(here, **{**fields, **changes})
    save(tmp_path, results)
    return results


def test_resume_of_a_finished_run_answers_from_the_verdicts(tmp_path, cli):
    results = _finished(tmp_path)
    done = finished_run(tmp_path)
    assert done is not None and done.verdicts == tuple(c.verdict for c in results.cases)
    r = cli("run", "--resume", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to resume" in r.stdout


def test_resume_with_a_case_not_run_reads_the_whole_file(tmp_path):
    results = _finished(tmp_path)
    cases = (dataclasses.replace(results.cases[0], verdict="not_run"), *results.cases[1:])
    save(tmp_path, dataclasses.replace(results, cases=cases))
    assert finished_run(tmp_path) is None


def test_resume_of_another_versions_run_reads_the_whole_file(tmp_path):
    _finished(tmp_path, suite_version="0.0.1")
    assert finished_run(tmp_path) is None  # resume_selection then refuses it or keeps it with a note


def test_merge_refusal_names_a_few_scenarios_not_thousands(tmp_path):
    many = tuple(f"scenario-{i:05d}" for i in range(5000))
    a = _copies(2, scenario_set=many)
    b = dataclasses.replace(_copies(4, scenario_set=many[:-1]), cases=_copies(4).cases[2:])
    with pytest.raises(BenchInputError) as err:
        merge([Source("a.json", a), Source("b.json", b)])
    text = str(err.value)
    assert "5000 scenarios, first 10" in text and "4999 scenarios, first 10" in text
    assert len(text) < 2000
