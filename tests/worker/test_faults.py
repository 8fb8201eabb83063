"""Faults during a run, produced for real: a worker aborts or segfaults in native code, is SIGKILLed from the
test, hangs past its timeout, or allocates beyond its memory limit. Each case gets the verdict `error` saying
what happened and where, the run goes on, and the cases that finished keep their results.

The crashes come from the test-only fault injection (bench.worker.inject: os.abort(), a read of address 0, a
sleep) and from a real workload too large for the memory limit: no exception pretends to be a crash.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from bench.results.exits import describe_exit, innermost_frame, where_it_was
from bench.results.store import load
from bench.runner.launch import RunOptions
from bench.runner.run import run_cases
from bench.scenario import load_scenarios
from bench.spec.cases import expand_all
from bench.spec.codec import to_dict
from bench.worker import inject
from tests.conftest import FAST_TIMING, LOAD_A, ONE_ADAPTER, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

MEMORY_LIMIT_MB = 2500  # torch, transformers and peft import in ~1.1 GiB of address space; a tiny case fits


def _scenario(
    name: str, *, timeout_s: int = 120, workload: dict | None = None, adapters=ONE_ADAPTER, steps=(LOAD_A,)
) -> str:
    return scenario_toml(
        name,
        steps,
        scenario={"timeout_s": timeout_s},
        timing=FAST_TIMING,
        tables={"workload": workload},
        adapters=adapters,
    )


# A batch of 4096 x 256 tokens: the first forward allocates several GiB, far beyond MEMORY_LIMIT_MB.
OOM_WORKLOAD = {"batch_size": 4096, "seq_len": 256}
BAD_SOURCE = {"a": {"path": "/nonexistent/adapter"}}


def _kill_when_hanging(log: Path, stop: threading.Event, killed: list[int]) -> None:
    """From outside, as an operator or the OOM killer would: SIGKILL the worker once it is running."""
    while not stop.is_set():
        if log.exists():
            m = re.search(rf"{re.escape(inject.MARKER)} hang at start \(pid (\d+)\)", log.read_text())
            if m:
                pid = int(m.group(1))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_every_fault_is_an_error_and_the_run_goes_on(tmp_path, cache_root, monkeypatch):
    # Every case after the first fault ran and reported its own outcome: the run went on.
    files = {
        "ok": _scenario("ok"),
        "bad-source": _scenario("bad-source", adapters=BAD_SOURCE),
        "oom": _scenario("oom", workload=OOM_WORKLOAD, adapters={}, steps=["forward"]),
        "abort": _scenario("crash-abort"),
        "segv": _scenario("crash-segv"),
        "kill": _scenario("crash-kill", timeout_s=60),
        "hang": _scenario("crash-hang", timeout_s=2),
    }
    paths = []
    for key, text in files.items():
        path = tmp_path / f"{list(files).index(key):02d}-{key}.toml"
        path.write_text(text)
        paths.append(path)
    monkeypatch.setenv(
        inject.ENV_VAR,
        "crash-abort:abort@1,crash-segv:segv@start,crash-kill:hang@start,crash-hang:hang@start",
    )
    cases = expand_all(load_scenarios(paths))
    out = tmp_path / "out"
    opts = RunOptions(out_dir=out, cache_root=cache_root, memory_limit_bytes=MEMORY_LIMIT_MB * 2**20)

    finished = {}

    def progress(event, i, n, case, result, elapsed_s):
        if event == "done":
            finished[case.id] = to_dict(result)
            load(out)  # results.json is valid after every case

    stop, killed = threading.Event(), []
    killer = threading.Thread(
        target=_kill_when_hanging, args=(out / "cases" / "crash-kill_fp32-none.log", stop, killed)
    )
    killer.start()
    try:
        results = run_cases(cases, opts, progress=progress)
    finally:
        stop.set()
        killer.join()

    by_scenario = {c.scenario: c for c in results.cases}
    assert [c.scenario for c in results.cases] == [
        "ok",
        "bad-source",
        "oom",
        "crash-abort",
        "crash-segv",
        "crash-kill",
        "crash-hang",
    ]
    assert by_scenario["ok"].verdict == "pass", by_scenario["ok"].reason  # under the memory limit too

    bad = by_scenario["bad-source"]  # reported by the worker itself, which then exits normally
    assert bad.verdict == "error" and bad.worker.returncode == 0
    assert bad.reason == "FileNotFoundError: adapter 'a': path /nonexistent/adapter does not exist"

    abort = by_scenario["crash-abort"]
    assert abort.verdict == "error" and abort.worker.returncode == -signal.SIGABRT
    assert "worker killed by SIGABRT during step 1 (load_adapter) (native crash" in abort.reason
    assert "innermost Python frame:" in abort.reason and "inject.py" in abort.reason

    segv = by_scenario["crash-segv"]
    assert segv.verdict == "error" and segv.worker.returncode == -signal.SIGSEGV
    assert "worker killed by SIGSEGV at start-up" in segv.reason and "segmentation" in segv.reason

    kill = by_scenario["crash-kill"]
    assert killed and kill.worker.pid == killed[0]
    assert kill.verdict == "error" and kill.worker.returncode == -signal.SIGKILL
    assert "worker killed by SIGKILL" in kill.reason and "killed from outside" in kill.reason

    hang = by_scenario["crash-hang"]
    assert hang.verdict == "error" and hang.reason.startswith("timed out after 2 s at start-up")
    assert "the worker was killed" in hang.reason
    assert "inject.py" in hang.reason  # the stack faulthandler dumped on SIGUSR1 shows where it hung
    assert hang.worker.wall_s < 30

    oom = by_scenario["oom"]
    assert oom.verdict == "error"
    assert oom.reason.startswith(
        f"step 1 (forward): out of memory (address-space limit {MEMORY_LIMIT_MB} MiB)"
    )
    assert "allocate" in oom.reason
    assert oom.worker.returncode == 0  # the worker reported it itself and exited normally

    # Finished cases are intact: what results.json holds now is what each case reported when it finished.
    for case in results.cases:
        assert to_dict(case) == finished[case.case_id]
    assert to_dict(load(out)) == to_dict(results)
    assert not (out / "cases" / "crash-segv_fp32-none.json").exists()  # a crashed worker wrote nothing


# ---------------------------------------------------------------------------------------------------------
# The pure functions that turn an exit status and a log into the reason.

SEGV_LOG = """\
peft-bench worker: started
peft-bench worker: step 3 (forward)
Fatal Python error: Segmentation fault

Thread 0x00007f0000000001 (most recent call first):
  File "/x/threading.py", line 320 in wait

Current thread 0x00007f0000000002 (most recent call first):
  Garbage-collecting
  File "/x/ext.py", line 12 in kernel
  File "/x/model.py", line 40 in forward

Extension modules: torch (total: 1)
"""


def test_describe_exit_names_the_signal_the_step_and_the_frame():
    text = describe_exit(-11, timed_out=False, timeout_s=60, log_text=SEGV_LOG)
    assert text.startswith("worker killed by SIGSEGV during step 3 (forward) (native crash")
    assert text.endswith("innermost Python frame: /x/ext.py:12 in kernel")


def test_describe_exit_other_outcomes():
    assert describe_exit(3, timed_out=False, timeout_s=60, log_text="") == (
        "worker exited with code 3 at start-up without writing a result"
    )
    started = "peft-bench worker: started\n"
    assert describe_exit(-9, timed_out=True, timeout_s=2.5, log_text=started).startswith(
        "timed out after 2.5 s before the first step"
    )
    oom = started + "MemoryError: can't allocate memory\n"
    assert describe_exit(1, timed_out=False, timeout_s=1, log_text=oom).endswith(
        ": MemoryError: can't allocate memory"
    )
    assert "signal 77" in describe_exit(-77, timed_out=False, timeout_s=1, log_text="")


def test_where_and_frame_controls():
    # Negative controls: no phase line, no dump.
    assert where_it_was("some library output\n") == "at start-up"
    assert innermost_frame('Traceback (most recent call last):\n  File "a.py", line 1, in f\n') is None
    assert where_it_was(SEGV_LOG) == "during step 3 (forward)"
    assert where_it_was(SEGV_LOG + "peft-bench worker: writing the result\n").startswith(
        "after the last step"
    )


def test_fault_spec_parsing():
    assert inject.parse(None) == () and inject.parse("") == ()
    faults = inject.parse("a:abort@start, *:hang@3")
    assert faults == (inject.Fault("a", "abort", "start"), inject.Fault("*", "hang", "3"))
    assert faults[1].applies("anything", "3") and not faults[1].applies("anything", "2")
    inject.fire(faults, "b", "start")  # no fault applies: returns (this test would die otherwise)
    for bad in ("a:explode@1", "a-abort@1", "a:abort@here", "../x:abort@1"):
        with pytest.raises(ValueError, match="PEFT_BENCH_TEST_FAULT"):
            inject.parse(bad)
