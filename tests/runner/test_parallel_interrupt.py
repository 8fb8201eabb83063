"""--jobs N and Ctrl-C: a case whose worker had finished when the signal came keeps its result.

With two jobs finishing together, a signal while the parent recorded the first recorded the second as
"interrupted while this case ran (its worker was killed)", though its worker had written a pass. The job
runner here is a stand-in that returns at once (no worker: what is tested is the parent's bookkeeping); the
signal is a KeyboardInterrupt raised in the parent's `finish`, as the signal handler raises it there."""

from __future__ import annotations

import threading
import time

import pytest

from bench.runner import run as run_module


def _run(monkeypatch, interrupt_in_finish: bool):
    together = threading.Barrier(2)  # the two jobs return at the same moment

    def job(case, slot, on_phase, live):
        together.wait(timeout=5)
        return f"result of {case}"

    monkeypatch.setattr(run_module, "guarded_run", job)
    finished: list[str] = []

    def begin(i, case):
        return None

    def finish(i, case, result):
        finished.append(result)
        if interrupt_in_finish and len(finished) == 1:
            time.sleep(0.1)  # the other job has returned by now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) if interrupt_in_finish else _nothing():
        run_module.run_parallel(["a", "b"], [object(), object()], begin, finish)
    return finished


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_job_that_finished_before_the_signal_keeps_its_result(monkeypatch):
    finished = _run(monkeypatch, interrupt_in_finish=True)
    assert sorted(finished) == ["result of a", "result of b"]


def test_control_without_a_signal_both_finish(monkeypatch):
    assert sorted(_run(monkeypatch, interrupt_in_finish=False)) == ["result of a", "result of b"]
