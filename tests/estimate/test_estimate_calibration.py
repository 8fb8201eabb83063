"""The calibration file: written, read back, trimmed per machine, and refused with its name and line when corrupt."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from bench.errors import BenchInputError
from bench.estimate.calibration import (
    RunRecord,
    append_run,
    calibration_path,
    coefficients_from,
    read_runs,
    runs_on,
    this_machine,
)
from bench.estimate.model import DEFAULTS, Sample, own_tail, predict_wall_s, slowdown
from bench.estimate.plan import estimate, last_run_tail
from bench.estimate.policy import MAX_RUNS_KEPT, MIN_CALIBRATION_CASES
from bench.estimate.text import calibration_text, load_text, run_line
from bench.scenario import load_scenario
from bench.spec.cases import expand
from tests.conftest import REPO, scenario_toml

HERE = {"cpu": "Test CPU", "cores": 2, "device": "cpu"}
THERE = {"cpu": "Other CPU", "cores": 64, "device": "cuda"}


def _run(n_cases=3, machine=HERE, wall=2.0, jobs=1, stamp="t"):
    cases = tuple(
        Sample(f"s[{i}]", {"case": 1.0, "steps": float(i)}, 1e6, wall + i, 6e8, jobs, wall, 5e8)
        for i in range(n_cases)
    )
    return RunRecord(
        machine, stamp, jobs, cases, estimate_total_s=10.0, measured_total_s=12.5, results="r.json"
    )


def test_a_run_is_read_back_as_written(tmp_path):
    path = calibration_path(tmp_path)
    assert read_runs(path) == []  # no file yet: no runs, no error
    assert append_run(path, _run()) is None
    assert append_run(path, _run(machine=THERE)) is None
    runs = read_runs(path)
    assert runs == [_run(), _run(machine=THERE)]
    assert runs_on(runs, HERE) == [_run()]
    assert len(path.read_text().splitlines()) == 2


def test_the_file_keeps_the_newest_runs_per_machine(tmp_path):
    path = calibration_path(tmp_path)
    append_run(path, _run(machine=THERE, stamp="there"))
    for i in range(MAX_RUNS_KEPT + 3):
        append_run(path, _run(stamp=str(i)))
    runs = read_runs(path)
    here = runs_on(runs, HERE)
    assert [r.finished_at for r in here] == [str(i) for i in range(3, MAX_RUNS_KEPT + 3)]
    assert [r.finished_at for r in runs_on(runs, THERE)] == ["there"]  # another machine's run is not dropped


def test_a_run_that_measured_nothing_takes_no_slot(tmp_path):
    path = calibration_path(tmp_path)
    assert append_run(path, _run(n_cases=0)) is None
    assert not path.exists()  # nothing written, not even an empty file
    for i in range(MAX_RUNS_KEPT):
        append_run(path, _run(stamp=str(i)))
    append_run(path, _run(n_cases=0, stamp="empty"))
    assert [r.finished_at for r in read_runs(path)] == [str(i) for i in range(MAX_RUNS_KEPT)]
    append_run(path, _run(n_cases=1, stamp="one"))  # the control: a run of one case does take a slot
    assert [r.finished_at for r in read_runs(path)][-2:] == [str(MAX_RUNS_KEPT - 1), "one"]


@pytest.mark.parametrize(
    "text, what",
    [
        ("{not json\n", "line 1"),
        (json.dumps({"format": 1, "machine": HERE}) + "\n", "line 1"),  # no cases
        ("\n" + json.dumps({"format": 99}) + "\n", "line 2"),
    ],
)
def test_a_corrupt_file_is_an_error_naming_it_and_its_line(tmp_path, text, what):
    path = calibration_path(tmp_path)
    path.write_text(text)
    with pytest.raises(BenchInputError) as err:
        read_runs(path)
    assert str(path) in str(err.value) and what in str(err.value)


@pytest.mark.parametrize(
    "old, new, what",
    [
        ('"wall_s": ', '"wall_s": NaN, "was": ', "NaN is not a number"),
        ('"measured_total_s": ', '"measured_total_s": Infinity, "was": ', "Infinity is not a number"),
        ('"wall_s": ', '"wall_s": 1e300, "was": ', "is not a duration"),
        ('"wall_s": ', '"wall_s": -1, "was": ', "is not a duration"),
    ],
)
def test_a_number_no_run_measures_is_a_corrupt_line(tmp_path, old, new, what):
    """A NaN or Infinity edited into the file stopped `list --estimate` and every later `run` in a traceback
    (the estimate's duration could not be printed); 1e300 s printed a 300-digit estimate. Control: the line
    as written reads back."""
    path = calibration_path(tmp_path)
    append_run(path, _run())
    line = path.read_text()
    assert old in line and len(read_runs(path)) == 1
    path.write_text(line.replace(old, new, 1))
    with pytest.raises(BenchInputError) as err:
        read_runs(path)
    assert "line 1" in str(err.value) and what in str(err.value)


def test_appending_to_a_corrupt_file_moves_it_aside(tmp_path):
    path = calibration_path(tmp_path)
    path.write_text("{not json\n")
    note = append_run(path, _run())
    assert note and str(path) in note and "moved aside" in note
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_text() == "{not json\n"  # nothing lost
    assert read_runs(path) == [_run()]


def test_too_few_cases_leave_the_defaults(tmp_path):
    few = [_run(n_cases=MIN_CALIBRATION_CASES - 1)]
    assert coefficients_from(few, jobs=1) is DEFAULTS
    enough = [_run(n_cases=MIN_CALIBRATION_CASES)]
    fitted = coefficients_from(enough, jobs=1)
    assert fitted.calibrated_cases == MIN_CALIBRATION_CASES
    # measured 12.5 s for cases of 2+3+4+5+6 = 20 s one after another: the run took less than its cases
    # (an inconsistent record) -> the overhead is clipped at 0, never negative.
    assert fitted.run_overhead_s == 0.0


def test_a_busy_run_calibrates_quiet_times():
    quiet = coefficients_from([_run(n_cases=40, wall=2.0)], jobs=1)
    busy_run = replace(_run(n_cases=40, wall=2.0), slowdown=4.0)
    busy = coefficients_from([busy_run], jobs=1)
    # The same measured times on a machine four times as busy: the quiet time is a quarter. At the cases'
    # mean the fit is exact (its level is free; the prior only pulls the slopes).
    mean = {"case": 1.0, "steps": sum(c.features["steps"] for c in busy_run.cases) / 40}
    mean_wall = sum(c.wall_s for c in busy_run.cases) / 40
    assert predict_wall_s(mean, quiet) == pytest.approx(mean_wall)
    assert predict_wall_s(mean, busy) == pytest.approx(mean_wall / 4)


def test_runs_of_the_same_jobs_are_preferred(tmp_path):
    one = _run(n_cases=MIN_CALIBRATION_CASES, wall=1.0, jobs=1)
    two = _run(n_cases=MIN_CALIBRATION_CASES, wall=9.0, jobs=2)
    on_two = coefficients_from([one, two], jobs=2)
    on_one = coefficients_from([one, two], jobs=1)
    assert on_two.wall_s["case"] > on_one.wall_s["case"] + 5


def test_time_between_cases_is_spread_over_them():
    base = _run(n_cases=40, wall=2.0)
    cases_s = sum(c.wall_s for c in base.cases)  # one job: the cases one after another
    exact = replace(base, measured_total_s=cases_s + DEFAULTS.run_overhead_s)
    slow_parent = replace(base, measured_total_s=cases_s + DEFAULTS.run_overhead_s + 40 * 0.5)
    tight, gapped = coefficients_from([exact], jobs=1), coefficients_from([slow_parent], jobs=1)
    assert tight.run_overhead_s == gapped.run_overhead_s == DEFAULTS.run_overhead_s
    mean = {"case": 1.0, "steps": sum(c.features["steps"] for c in base.cases) / 40}
    # Negative control: without the parent's 0.5 s per case the cases cost what they measured.
    assert predict_wall_s(mean, gapped) - predict_wall_s(mean, tight) == pytest.approx(0.5)


@pytest.mark.slow  # a real run in a child process (about 8 s)
def test_a_run_started_by_a_test_records_itself_in_the_session_cache(tmp_path, write_scenario, cache_root):
    """A child `bench run` that inherits the test session's environment, as the report and Slurm tests' runs
    do, writes its calibration line into the session's cache and nothing under the user's home."""
    scenario = write_scenario(scenario_toml("isolated", ["forward"]))
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("XDG_CACHE_HOME", None)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", str(scenario), "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (home / ".cache").exists()  # without the session's PEFT_BENCH_CACHE, the run lands here
    recorded = [r.results for r in read_runs(calibration_path(cache_root))]
    assert str(out / "results.json") in recorded


NOW = dt.datetime(2026, 12, 6, 20, 0, 0, tzinfo=dt.UTC)


def _ended(seconds_ago: float, ran_s: float | None = 300.0) -> RunRecord:
    return replace(
        _run(), finished_at=(NOW - dt.timedelta(seconds=seconds_ago)).isoformat(), measured_total_s=ran_s
    )


def test_the_newest_runs_tail_is_taken_out_of_the_load():
    assert last_run_tail([_ended(5)], 2, NOW) == pytest.approx(own_tail(2, 300.0, 5))
    assert last_run_tail([_ended(5)], 2, NOW) > 1.8  # back to back: almost the whole average is our own
    # Only the newest run counts (the file's order): an older run's tail is already inside it.
    assert last_run_tail([_ended(5), _ended(600)], 2, NOW) == pytest.approx(own_tail(2, 300.0, 600))
    # Controls: nothing to take out without a run, for an interrupted one, or an end that is not a time.
    assert last_run_tail([], 2, NOW) == 0.0
    assert last_run_tail([_ended(5, ran_s=None)], 2, NOW) == 0.0
    assert last_run_tail([replace(_ended(5), finished_at="2026-12-06T19:59:55")], 2, NOW) == 0.0  # no zone
    assert last_run_tail([replace(_ended(5), finished_at="t")], 2, NOW) == 0.0


def test_the_estimate_leaves_the_last_runs_own_load_out_of_its_factor(tmp_path, write_scenario):
    """Against the machine's real load average: what was taken out is the tail, never more than the load, and
    the factor is the one the rest gives."""
    cases = expand(load_scenario(write_scenario(scenario_toml("tail", ["forward"]))))
    machine = this_machine("cpu")
    just_now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    path = calibration_path(tmp_path)
    append_run(path, replace(_run(machine=machine), finished_at=just_now, measured_total_s=600.0))
    est = estimate(cases, tmp_path, "cpu", 1, strict=True)
    # Between "ended now" and "ended 30 s ago" (the stamp's second, and the time this test takes under load).
    lowest, highest = (min(own_tail(est.cores, 600.0, ago), est.load_1min) for ago in (30, 0))
    assert lowest <= est.own_load <= highest + 1e-9
    assert est.slowdown == pytest.approx(slowdown(est.load_1min - est.own_load, 1, est.cores))
    # Control: a run that ended an hour ago leaves nothing, and the factor is the whole load's.
    an_hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat(timespec="seconds")
    append_run(path, replace(_run(machine=machine), finished_at=an_hour_ago, measured_total_s=600.0))
    old = estimate(cases, tmp_path, "cpu", 1, strict=True)
    assert old.own_load < 1e-10
    assert old.slowdown == pytest.approx(slowdown(old.load_1min, 1, old.cores))
    # The line says how much of the load was the last run's, and says nothing where none was.
    assert f"load {est.load_1min:.1f} on {est.cores} core(s)" in load_text(est)
    assert "last run" not in load_text(old)
    shown = replace(est, load_1min=1.8, own_load=1.7, slowdown=1.0)
    assert load_text(shown) == f"load 1.8 on {est.cores} core(s), 1.7 of it the last run's: x1.0"


def test_calibrated_size_terms_left_at_their_defaults_are_said(tmp_path, write_scenario):
    """Runs of tiny models calibrate the per-case terms, not the size terms: a selection of a 135M model then
    hears that its size terms are the defaults; a tiny selection, or a calibration whose models vary in size,
    hears nothing more than 'calibrated'."""
    machine = this_machine("cpu")
    path = calibration_path(tmp_path)
    append_run(path, _run(n_cases=6, machine=machine))  # 1 MB models only
    big = expand(
        load_scenario(write_scenario(scenario_toml("big", ["forward"], model="builtin:smollm2-135m-shape")))
    )
    tiny = expand(load_scenario(write_scenario(scenario_toml("tiny", ["forward"]), "tiny.toml")))
    said = estimate(big, tmp_path, "cpu", 1, strict=True)
    assert said.coefficients.calibrated_cases == 6 and not said.coefficients.sizes_fitted
    assert "model size at their defaults" in calibration_text(said) and "size terms default" in run_line(said)
    quiet = estimate(tiny, tmp_path, "cpu", 1, strict=True)
    assert calibration_text(quiet) == "calibrated on 6 measured case(s)"
    assert "size" not in run_line(quiet)
    # Control: once a stored run holds a model 1000x larger, the size terms are fitted and nothing is added.
    large = tuple(replace(s, weight_bytes=1e9) for s in _run(n_cases=3).cases)
    append_run(path, replace(_run(machine=machine), cases=large))
    fitted = estimate(big, tmp_path, "cpu", 1, strict=True)
    assert fitted.coefficients.sizes_fitted
    assert calibration_text(fitted) == "calibrated on 9 measured case(s)" and "size" not in run_line(fitted)
