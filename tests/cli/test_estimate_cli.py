"""`list --estimate`, the estimate line of `run`, the --max-minutes refusal and the calibration a run leaves."""

from __future__ import annotations

import json

import pytest

from bench.estimate.calibration import calibration_path
from tests.conftest import MINIMAL

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

TWO_CASES = MINIMAL.replace('compile = ["aot_eager"]', 'compile = ["none", "aot_eager"]')


def test_list_estimate_prints_a_row_per_case_and_totals(cli, write_scenario, tmp_path):
    path = write_scenario(TWO_CASES)
    cache = tmp_path / "cache"  # nothing there: uncalibrated
    proc = cli("list", path, "--estimate", "--cache", cache)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["case", "params", "precision", "compile", "wall", "s", "peak", "RSS", "MiB"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"minimal[fp32-none]", "minimal[fp32-aot_eager]"}
    assert rows["minimal[fp32-none]"][1] == "210k"  # tiny-llama's 209,984 parameters
    # The compiled case costs its compile on top of the same steps.
    assert float(rows["minimal[fp32-aot_eager]"][4]) > float(rows["minimal[fp32-none]"][4])
    assert "total: 2 case(s)" in proc.stdout and "run on 1 job(s)" in proc.stdout
    assert "uncalibrated" in proc.stdout and "no earlier estimate" in proc.stdout
    assert not cache.exists()  # an estimate writes nothing
    # Negative control: without --estimate, list prints the ids alone.
    plain = cli("list", path)
    assert plain.stdout.split() == ["minimal[fp32-none]", "minimal[fp32-aot_eager]"]


def test_jobs_divide_the_estimated_run(cli, write_scenario, tmp_path):
    path = write_scenario(TWO_CASES.replace('["none", "aot_eager"]', '["none", "aot_eager", "inductor"]'))
    one = cli("list", path, "--estimate", "--cache", tmp_path, "--jobs", "1").stdout
    two = cli("list", path, "--estimate", "--cache", tmp_path, "--jobs", "2").stdout

    def run_s(text):
        line = next(x for x in text.splitlines() if x.startswith("run on"))
        return line

    assert "run on 2 job(s)" in run_s(two) and run_s(one) != run_s(two)


def test_an_unknown_model_size_is_said_not_guessed(cli, write_scenario, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    path = write_scenario(MINIMAL.replace('"builtin:tiny-llama"', json.dumps(str(folder))))
    proc = cli("list", path, "--estimate", "--cache", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    row = proc.stdout.splitlines()[1].split()
    assert row[1] == "unknown" and row[4] == "unknown"
    assert "1 of unknown size not counted" in proc.stdout
    assert "warning" not in proc.stderr  # control: no budget asked, nothing to warn about
    # A budget the known cases hold says what it did not count, on list and before a run.
    budget = cli("list", path, "--max-minutes", "600", "--cache", tmp_path / "cache")
    assert budget.returncode == 0, budget.stderr
    assert "--max-minutes 600 held for the cases of known size" in budget.stderr
    assert "1 case(s) of unknown size (e.g. minimal[fp32-aot_eager]) are not counted" in budget.stderr


def test_max_minutes_refuses_before_any_case_starts(cli, write_scenario, tmp_path, cache_root):
    path = write_scenario(TWO_CASES)
    out = tmp_path / "out"
    calibration = calibration_path(cache_root)
    before = calibration.read_bytes() if calibration.exists() else None
    proc = cli("run", path, "--out", out, "--max-minutes", "0.01", "--cache", cache_root)
    assert proc.returncode == 2
    assert "--max-minutes 0.01" in proc.stderr and "over the budget" in proc.stderr
    assert "running" not in proc.stdout  # no case started
    assert not out.exists()  # no folder, no lock, no results
    assert (calibration.read_bytes() if calibration.exists() else None) == before  # no run recorded
    # Without --out, no reports/run-* folder is made either.
    proc = cli("run", path, "--max-minutes", "0.01", "--cache", cache_root, cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "reports").exists()
    # list refuses the same budget the same way.
    assert cli("list", path, "--max-minutes", "0.01", "--cache", cache_root).returncode == 2


@pytest.mark.slow
def test_a_run_records_its_calibration_and_the_next_estimate_compares(
    cli, write_scenario, tmp_path, cache_root
):
    path = write_scenario(MINIMAL)
    out = tmp_path / "out"
    # Negative control for the budget: one that holds lets the run go on.
    proc = cli("run", path, "--out", out, "--max-minutes", "60", "--cache", cache_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("peft-bench: estimate ") and "on 1 job(s)" in first
    last = json.loads(calibration_path(cache_root).read_text().splitlines()[-1])
    assert last["results"] == str(out / "results.json")
    (case,) = last["cases"]
    results = json.loads((out / "results.json").read_text())
    assert case["case_id"] == "minimal[fp32-aot_eager]"
    assert case["wall_s"] == results["cases"][0]["worker"]["wall_s"]
    assert case["peak_rss_bytes"] > 100 * 2**20 and case["estimate_wall_s"] > 0
    assert case["features"]["compiles:aot_eager"] == 1
    assert last["measured_total_s"] > case["wall_s"] and last["estimate_total_s"] > 0
    assert last["load_1min"] >= 0 and last["slowdown"] >= 1.0  # what the machine's load made of it
    listed = cli("list", path, "--estimate", "--cache", cache_root).stdout
    ratio = last["estimate_total_s"] / last["measured_total_s"]
    assert f"s measured, {ratio:.2f}x" in listed


@pytest.mark.slow
def test_a_corrupt_calibration_file_is_named_and_the_run_goes_on(cli, write_scenario, tmp_path, cache_root):
    path = write_scenario(MINIMAL)
    calibration = calibration_path(cache_root)
    kept = calibration.read_bytes() if calibration.exists() else None
    try:
        calibration.parent.mkdir(parents=True, exist_ok=True)
        calibration.write_text("{not json\n")
        listed = cli("list", path, "--estimate", "--cache", cache_root)
        assert listed.returncode == 2 and str(calibration) in listed.stderr and "line 1" in listed.stderr
        proc = cli("run", path, "--out", tmp_path / "out", "--cache", cache_root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{calibration}: line 1" in proc.stderr and "built-in defaults" in proc.stderr
        assert "moved aside" in proc.stderr
        assert len(calibration.read_text().splitlines()) == 1  # a new file, with this run
        aside = list(calibration.parent.glob(calibration.name + ".corrupt-*"))
        assert [p.read_text() for p in aside] == ["{not json\n"]
        for p in aside:
            p.unlink()
    finally:
        if kept is not None:
            calibration.write_bytes(kept)
