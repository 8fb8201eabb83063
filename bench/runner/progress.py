"""Progress inside a case: a thread in the parent tails the case's log for the worker's phase lines
(bench.results.exits.PHASE_MARKER) and reports the current step and how long it has run.

It wakes every POLL_S and reads only the bytes added since its last look, so the parent stays near idle
(its CPU time is recorded as parent_cpu_s). The display (an updating line on a terminal, plain lines
otherwise) is the CLI's; this module only finds the phases, and `eta_s` is a pure function.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.results.exits import PHASE_MARKER

POLL_S = 0.5


def last_phase(text: str) -> str | None:
    phase = None
    for line in text.splitlines():
        if line.startswith(PHASE_MARKER):
            phase = line[len(PHASE_MARKER) :].strip()
    return phase


def eta_s(done: int, total: int, finished_s: float, current_s: float = 0.0) -> float | None:
    """Seconds left for the run: the mean wall time of the `done` finished cases (which took `finished_s`) for
    each case not finished, less what the running one has had (`current_s`); None before the first ends."""
    if done <= 0:
        return None
    return max(0.0, finished_s / done * (total - done) - current_s)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def phase_line(
    i: int,
    n: int,
    phase: str,
    phase_s: float,
    elapsed_s: float,
    eta: float | None,
    previous: tuple[str, float] | None = None,
) -> str:
    """`[2/5]   step 3 (forward) 4s  | run 1m12s, ETA 2m01s` (ETA `?` until a case has finished).

    With `previous` (the step that just ended and its whole time), the line of a step that has just begun:
    `[2/5]   step 3 (forward)  (step 2 (compile) took 12s)  | ...`; a step just begun has run 0 s, which is
    all a log that gets one line per step would otherwise show."""
    left = "?" if eta is None else _clock(eta)
    now = f"{phase}  ({previous[0]} took {_clock(previous[1])})" if previous else f"{phase} {_clock(phase_s)}"
    return f"[{i}/{n}]   {now}  | run {_clock(elapsed_s)}, ETA {left}"


class CaseWatcher:
    """Calls on_phase(phase, phase_elapsed_s, changed) every POLL_S while a case runs. When a new step is
    seen, the step that ended is reported once more with its whole time (changed False), then the new one
    (changed True, 0 s): a display that shows a line per step gets the ended step's time from the first."""

    def __init__(
        self, log_file: Path, case, on_phase: Callable[[str, float, bool], None], poll_s: float = POLL_S
    ):
        self._log, self._case, self._on_phase, self._poll_s = Path(log_file), case, on_phase, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peft-bench-progress", daemon=True)
        self._offset, self._partial = 0, ""
        self.phase: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _read_new(self) -> str | None:
        try:
            with open(self._log, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return None
        self._offset += len(data)
        text = self._partial + data.decode("utf-8", "replace")
        complete, _, self._partial = text.rpartition("\n")
        return last_phase(complete) if complete else None

    def _run(self) -> None:
        since = time.monotonic()
        while not self._stop.wait(self._poll_s):
            phase = self._read_new()
            changed = phase is not None and phase != self.phase
            if changed:
                now = time.monotonic()
                if self.phase is not None:  # the step that ended, with its whole time
                    self._report(self.phase, now - since, False)
                self.phase, since = phase, now
            if self.phase is not None:
                self._report(self.phase, time.monotonic() - since, changed)

    def _report(self, phase: str, phase_s: float, changed: bool) -> None:
        try:
            self._on_phase(phase, phase_s, changed)
        except Exception:  # a display error must not end the watch or the run
            pass
