"""Issue 32, the preloaded worker (bench.runner.zygote) under signals a user or a machine may send it: SIGSTOP
while its case runs, SIGINT, and libraries that print while it imports them.

Each test names its negative control: the old behaviour it fails on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from bench.runner.launch import child_env
from bench.runner.processes import Zygote
from tests.conftest import REPO
from tests.runner.test_interrupt_resume import _scenario, _start, _wait_for_hang

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow


def _kill_if_there(pid: int | None) -> None:
    if pid is None:
        return
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


@pytest.mark.slow
def test_a_stopped_preloaded_worker_still_times_out_and_the_run_goes_on(tmp_path, cache_root):
    """SIGSTOP to the preloaded worker while its case hangs, --timeout 5: the case is `error` "timed out",
    the stopped worker is killed, and the next case runs in a new one.
    Control: the run waited for ever in handle.wait(None) -> Zygote._read(None) (killed here after 90 s)."""
    paths = []
    for name in ("stopped", "after"):
        path = tmp_path / f"{name}.toml"
        path.write_text(_scenario(name))
        paths.append(path)
    out = tmp_path / "out"
    proc = _start([*paths, "--timeout", "5", "--out", out], cache_root, "stopped:hang@start")
    zygote = None
    try:
        case_pid = _wait_for_hang(out / "cases" / "stopped_fp32-none.log", proc)
        zygote = psutil.Process(case_pid).ppid()
        assert "bench.runner.zygote" in " ".join(psutil.Process(zygote).cmdline())
        os.kill(zygote, signal.SIGSTOP)
        started = time.monotonic()
        try:
            output, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            raise AssertionError(
                f"the run still waits for the stopped worker after 90 s:\n{output}"
            ) from None
        assert time.monotonic() - started < 60, output
        assert proc.returncode == 1, output  # an error case, nothing lost
        cases = json.loads((out / "results.json").read_text())["cases"]
        assert [c["verdict"] for c in cases] == ["error", "pass"], output
        assert cases[0]["reason"].startswith("timed out after 5 s"), cases[0]["reason"]
        assert not psutil.pid_exists(zygote) or psutil.Process(zygote).status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        _kill_if_there(zygote)


def test_sigint_to_the_preloaded_worker_ends_it_quietly(tmp_path):
    """A SIGINT sent to the preloaded worker itself (kill -INT, or a terminal's Ctrl-C reaching its group) ends
    it with no KeyboardInterrupt traceback on the stderr it shares with the run.
    Control: the old zygote printed "Traceback ... KeyboardInterrupt" from its read of the next request."""
    env = child_env(tmp_path / "inductor")
    env["OMP_NUM_THREADS"] = "1"
    z = Zygote(env, stderr=subprocess.PIPE)
    try:
        os.kill(z.pid, signal.SIGINT)
        z._proc.wait(timeout=60)
        err = z._proc.stderr.read().decode(errors="replace")
    finally:
        _kill_if_there(z._proc.pid if z._proc.poll() is None else None)
        z._proc.stderr.close()
        z.close()
    assert z._proc.returncode == -signal.SIGINT, (z._proc.returncode, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_what_the_libraries_print_at_import_goes_to_the_case_log_not_the_run_output(tmp_path, cache_root):
    """bitsandbytes logs "Failed to load CPU gemm_4bit_forward from kernels-community" when the preloaded
    worker imports it (on CPUs with AVX512-BF16): every run printed it, -q too. The same kind of line made
    here on any CPU: TRANSFORMERS_VERBOSITY=debug has transformers log "Detected torch version" at import.
    With -q the run prints its summary only; the line is in the case's log, as a spawned worker's would be.
    Control: the old zygote's imports wrote to the run's stderr (3 lines here)."""
    scenario = tmp_path / "quiet.toml"
    scenario.write_text(_scenario("quiet"))
    out = tmp_path / "out"
    env = {**os.environ, "PEFT_BENCH_CACHE": str(cache_root), "PYTHONPATH": str(REPO)}
    env["TRANSFORMERS_VERBOSITY"] = "debug"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "-q", "--worker", "fork", scenario, "--out", out],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Detected torch version" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert "Detected torch version" in (out / "cases" / "quiet_fp32-none.log").read_text()
