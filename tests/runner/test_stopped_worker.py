"""Issue 32, the preloaded worker (bench.runner.zygote) under signals a user or a machine may send it: SIGSTOP
while its case runs, SIGINT, and libraries that print while it imports them.

Each test names its negative control: the old behaviour it fails on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.runner.test_interrupt_resume import _scenario, _start, _wait_for_hang


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
