"""A run whose output folder takes no more bytes (issue 32): one clear line, exit 74, the finished cases kept,
the file marked as not finished, and `--resume` finishing it without running a finished case again.

The limit is real: the run's process gets RLIMIT_FSIZE (`ulimit -f`), so its writes past the limit fail with
EFBIG, which the suite treats like ENOSPC and EDQUOT (bench.errors.DISK_FULL_ERRNOS)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MINIMAL, REPO

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

SCENARIO = MINIMAL.replace(
    'compile = ["aot_eager"]', 'compile = ["none"]\nprecision = ["fp32", "bf16"]'
).replace('[[steps]]\nop = "compile"\n\n', "")


def _run(args, cache_root: Path, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    # No bytecode written under the limit: a .pyc cut short in the checkout's __pycache__ breaks every later
    # import of its module (a fresh clone has none yet).
    env = {
        **os.environ,
        "PEFT_BENCH_CACHE": str(cache_root),
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "bench", "run", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
    )


@pytest.mark.slow
def test_a_full_output_folder_stops_the_run_with_one_line_and_resume_finishes_it(tmp_path, cache_root):
    """Control: before write_run the second save's EFBIG escaped as a traceback (exit 1), results.json said
    interrupted=false, and --resume ran the finished second case again."""
    scenario = tmp_path / "full.toml"
    scenario.write_text(SCENARIO)
    # A first run with no limit: the size of results.json with both cases done (and the models built).
    free = _run([scenario, "--out", tmp_path / "free"], cache_root)
    assert free.returncode == 0, free.stdout + free.stderr
    both_done = (tmp_path / "free" / "results.json").stat().st_size
    # Room for one finished case and one pending (a pending case is far smaller than a finished one), and for
    # every case file, but not for both cases in results.json.
    out = tmp_path / "out"
    full = _run([scenario, "--out", out], cache_root, limit_bytes=both_done - 2000)
    assert full.returncode == 74, full.stdout + full.stderr
    assert "Traceback" not in full.stderr, full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("peft-bench: error:")]
    assert len(errors) == 1 and "File too large" in errors[0] and "--resume" in errors[0], full.stderr

    kept = json.loads((out / "results.json").read_text())
    assert kept["interrupted"] is True
    assert [c["verdict"] for c in kept["cases"]] == ["pass", "not_run"]
    second_log = next((out / "cases").glob("*bf16*.log"))
    second_log_mtime = second_log.stat().st_mtime_ns

    resumed = _run(["--resume", out], cache_root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "2 kept" in resumed.stdout, resumed.stdout
    final = json.loads((out / "results.json").read_text())
    assert final["interrupted"] is False
    assert [c["verdict"] for c in final["cases"]] == ["pass", "pass"]
    assert second_log.stat().st_mtime_ns == second_log_mtime, "the finished second case ran again"
