"""The command line as a user runs it: real worker processes, exit codes, files on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import MINIMAL, REPO


def _cli(*args, cache_root, cwd=REPO):
    env = {**os.environ, "PEFT_BENCH_CACHE": str(cache_root), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "bench", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


@pytest.mark.slow
def test_run_writes_results_csv_and_summary(tmp_path, write_scenario, cache_root):
    failing = MINIMAL.replace('name = "minimal"', 'name = "failing"').replace(
        'op = "forward"', 'op = "forward"\nexpect = { recompiles = ">= 5" }'
    )
    a = write_scenario(MINIMAL, "a.toml")
    b = write_scenario(failing, "b.toml")
    out = tmp_path / "out"
    proc = _cli("run", a, b, "--out", out, cache_root=cache_root)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one case fails
    assert "[1/2] running" in proc.stdout and "PASS" in proc.stdout and "FAIL" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    verdicts = {c["case_id"]: c["verdict"] for c in data["cases"]}
    assert verdicts == {"minimal[fp32-aot_eager]": "pass", "failing[fp32-aot_eager]": "fail"}
    assert data["environment"]["libraries"]["torch"]
    assert data["parent_cpu_s"] is not None
    csv_text = (out / "results.csv").read_text()
    assert csv_text.startswith("case_id,scenario,precision,compile,hotswap_path,strategy,verdict,step,op")
    assert "latency_ms_median" in csv_text
    summary = (out / "summary.md").read_text()
    assert "| `failing[fp32-aot_eager]` | fail |" in summary
    for case in data["cases"]:  # each case ran in its own process
        assert case["worker"]["pid"] != os.getpid() and case["worker"]["returncode"] == 0


def test_invalid_scenario_exits_2_without_traceback(write_scenario, cache_root):
    bad = write_scenario(MINIMAL.replace('op = "forward"', 'op = "fwd"'))
    proc = _cli("run", bad, cache_root=cache_root)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "step 3" in proc.stderr and "unknown op 'fwd'" in proc.stderr and str(bad) in proc.stderr


def test_unknown_option_exits_2(cache_root):
    proc = _cli("run", "--frobnicate", cache_root=cache_root)
    assert proc.returncode == 2 and "unrecognized arguments: --frobnicate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_list_prints_case_ids(cache_root):
    proc = _cli("list", "scenarios", cache_root=cache_root)
    assert proc.returncode == 0
    ids = proc.stdout.split()
    assert "hotswap-peft[fp32-aot_eager-peft]" in ids
    assert "toggles[fp32-none]" in ids and "toggles[fp32-aot_eager]" in ids


def test_module_and_console_script_agree(cache_root):
    proc = _cli("--help", cache_root=cache_root)
    assert proc.returncode == 0 and "peft-bench" in proc.stdout
