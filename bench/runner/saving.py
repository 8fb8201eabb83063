"""When a running run rewrites its results file: after every case while a write is cheap, less often once it
is not.

A write is the whole file (results.json, its columnar copy, results.csv), so it costs in proportion to the
cases finished so far: rewritten after every case, a run's writes grow with the square of its cases. The
shipped run of 105 cases one at a time spent 19 s of the parent's CPU, about 10 s of it in those writes
(reports/performance/run_time.md), and 1,000 cases would spend about a quarter of an hour. So a finished
case rewrites the file only once the run has gone on for `1 / share` times as long as the last write took
(`save_due`): the writes then take at most about `share` of the run's time, whatever its size, and the file
lags by at most that many write-times. Nothing is lost by the wait: each case's worker has written its
result in cases/ already, a `--resume` takes from there any case the file is missing
(bench.runner.resume.finished_in_case_files), and the run's final write, and its write on an interrupt,
always happen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SavePolicy:
    share: float = 0.02  # of the run's wall time that rewriting the results file while it runs may take


def save_due(policy: SavePolicy, since_last_s: float, last_cost_s: float) -> bool:
    """Whether a finished case rewrites the results file now: the time since the last write ended is at least
    `last_cost_s / share` (the first write, with no cost timed yet, is always due)."""
    return since_last_s * policy.share >= last_cost_s


@dataclass
class SaveClock:
    """One run's writes: `maybe(write)` writes when `save_due` says so and times it for the next decision."""

    policy: SavePolicy = SavePolicy()
    clock: Callable[[], float] = time.perf_counter
    last_end_s: float = -math.inf
    last_cost_s: float = 0.0
    written: int = 0
    deferred: int = 0  # finished cases that did not write (a later write holds them)

    def maybe(self, write: Callable[[], None]) -> bool:
        if not save_due(self.policy, self.clock() - self.last_end_s, self.last_cost_s):
            self.deferred += 1
            return False
        start = self.clock()
        write()
        self.last_end_s = self.clock()
        self.last_cost_s = self.last_end_s - start
        self.written += 1
        return True
