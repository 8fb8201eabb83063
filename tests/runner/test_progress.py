"""Progress inside a case (bench.runner.progress): the watcher finds the worker's phase lines in the case log as they
are written, ignores a line still being written, costs the parent next to no CPU; the ETA and the line shown."""

from __future__ import annotations

import resource
import time

import pytest

from bench.results.exits import PHASE_MARKER
from bench.runner.progress import CaseWatcher, eta_s, last_phase, phase_line


def test_last_phase_and_eta_and_line():
    text = f"noise\n{PHASE_MARKER} started\nmore\n{PHASE_MARKER} step 2 (forward)\nlog line\n"
    assert last_phase(text) == "step 2 (forward)"
    assert last_phase("nothing here\n") is None
    assert eta_s(0, 5, 0.0) is None  # nothing finished: no estimate
    assert eta_s(2, 5, 20.0) == 30.0  # 10 s a case, 3 to go
    assert eta_s(2, 5, 20.0, current_s=4.0) == 26.0
    assert eta_s(5, 5, 50.0) == 0.0
    assert (
        phase_line(2, 5, "step 3 (forward)", 4.2, 72, 121)
        == "[2/5]   step 3 (forward) 4s  | run 1m12s, ETA 2m01s"
    )
    assert phase_line(1, 5, "started", 0, 3, None).endswith("ETA ?")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _watch(log, poll_s: float, seconds: float, writes=()):
    seen: list[tuple[str, bool]] = []
    w = CaseWatcher(log, None, lambda phase, s, changed: seen.append((phase, changed)), poll_s=poll_s)
    cpu = _cpu_s()
    w.start()
    try:
        end = time.monotonic() + seconds
        for delay, text in writes:
            time.sleep(delay)
            with open(log, "a") as f:
                f.write(text)
        time.sleep(max(0.0, end - time.monotonic()))
    finally:
        w.stop()
    return seen, _cpu_s() - cpu


def test_watcher_follows_the_log_and_stays_idle(tmp_path):
    log = tmp_path / "case.log"
    log.write_text("")
    seen, cpu_s = _watch(
        log,
        0.1,
        2.0,
        writes=[
            (0.3, f"{PHASE_MARKER} step 1 (load_adapter)\n"),
            (0.5, f"{PHASE_MARKER} step 2 (forw"),  # half a line: not a phase yet
            (0.5, "ard)\n"),
        ],
    )
    phases = [p for p, changed in seen if changed]
    assert phases == ["step 1 (load_adapter)", "step 2 (forward)"]
    assert any(not changed for _, changed in seen)  # the same step again: the elapsed time moves on
    assert cpu_s < 0.2, cpu_s
    assert _wakeups_bounded(seen, 0.1, 2.0)


def _wakeups_bounded(seen, poll_s: float, seconds: float) -> bool:
    return len(seen) <= seconds / poll_s + 2


def test_a_busy_watcher_would_be_caught(tmp_path):
    """Negative control of the idle check: a watcher that polls without sleeping wakes thousands of times."""
    log = tmp_path / "case.log"
    log.write_text(f"{PHASE_MARKER} started\n")
    seen, _ = _watch(log, 0.0, 1.0)
    assert not _wakeups_bounded(seen, 0.1, 1.0)


@pytest.mark.slow
def test_a_step_change_reports_the_finished_steps_whole_time(tmp_path):
    """Issue 32: a log that is not a terminal shows one line per new step, and a new step has run 0 s, so
    every line said "0s". The watcher now reports the step that ended with its whole time at the change."""
    log = tmp_path / "case.log"
    log.write_text("")
    seen: list[tuple[str, float, bool]] = []
    w = CaseWatcher(log, None, lambda phase, s, changed: seen.append((phase, s, changed)), poll_s=0.5)
    w.start()
    try:
        with open(log, "a") as f:
            f.write(f"{PHASE_MARKER} step 1 (load_adapter)\n")
        time.sleep(2.2)
        with open(log, "a") as f:
            f.write(f"{PHASE_MARKER} step 2 (forward)\n")
        time.sleep(1.0)
    finally:
        w.stop()
    changes = [k for k, (_, _, changed) in enumerate(seen) if changed]
    assert [seen[k][0] for k in changes] == ["step 1 (load_adapter)", "step 2 (forward)"]
    phase, step_1_s, _ = seen[changes[1] - 1]  # the report just before step 2 began
    assert phase == "step 1 (load_adapter)" and step_1_s >= 1.8, seen


def test_phase_line_after_a_step_names_its_time():
    line = phase_line(2, 5, "step 3 (forward)", 0.0, 72, 121, previous=("step 2 (compile)", 12.4))
    assert line == "[2/5]   step 3 (forward)  (step 2 (compile) took 12s)  | run 1m12s, ETA 2m01s"
