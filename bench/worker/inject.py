"""Test-only fault injection: make a worker crash, hang or abort for real, at its start or at a given step.

FOR TESTS ONLY. The fault tests need a worker that really dies by a signal or really hangs, at a point they
choose, to check that the parent turns each into an `error` result and goes on. Raising an exception that
pretends to be a crash would test nothing. The variable is read once, by the worker entry point; nothing
else in the suite looks at it, and a run without it is unaffected.

    PEFT_BENCH_TEST_FAULT="SCENARIO:KIND@WHERE[,SCENARIO:KIND@WHERE...]"

SCENARIO is a scenario name (or `*` for every case), KIND one of KINDS, WHERE `start` (before the heavy
imports: a fault that costs no torch import) or a 1-based step number (before that step runs).
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import time
from dataclasses import dataclass

ENV_VAR = "PEFT_BENCH_TEST_FAULT"
# abort: libc abort(), a native crash by SIGABRT. segv: a read of address 0, a native crash by SIGSEGV.
# hang: sleep until killed (the parent's timeout or the test kills it). slow: sleep SLOW_S, then go on (a step
# that takes seconds, for the progress lines).
KINDS = ("abort", "segv", "hang", "slow")
SLOW_S = 2.5
_ENTRY_RE = re.compile(r"^(?P<scenario>\*|[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<kind>[a-z]+)@(?P<where>start|\d+)$")
# A line the test can wait for: the fault is about to happen (the log is flushed before it does).
MARKER = "peft-bench test fault:"


@dataclass(frozen=True)
class Fault:
    scenario: str
    kind: str
    where: str  # "start" or a step number as text

    def applies(self, scenario: str, where: str) -> bool:
        return self.scenario in ("*", scenario) and self.where == where


def parse(text: str | None) -> tuple[Fault, ...]:
    """The faults a value of PEFT_BENCH_TEST_FAULT asks for. A malformed value is an error, not ignored:
    a test that meant to inject a fault must not pass because nothing was injected."""
    if not text:
        return ()
    faults = []
    for entry in (e.strip() for e in text.split(",")):
        m = _ENTRY_RE.match(entry)
        if not m or m.group("kind") not in KINDS:
            raise ValueError(
                f"{ENV_VAR}: expected SCENARIO:KIND@WHERE with KIND one of {', '.join(KINDS)} and WHERE "
                f"'start' or a step number, got {entry!r}"
            )
        faults.append(Fault(m.group("scenario"), m.group("kind"), m.group("where")))
    return tuple(faults)


def fire(faults: tuple[Fault, ...], scenario: str, where: str) -> None:
    """Trigger the first fault that applies here; return if none does."""
    fault = next((f for f in faults if f.applies(scenario, where)), None)
    if fault is None:
        return
    print(f"{MARKER} {fault.kind} at {where} (pid {os.getpid()})", flush=True)
    sys.stderr.flush()
    if fault.kind == "abort":
        os.abort()
    elif fault.kind == "segv":
        ctypes.string_at(0)  # reads address 0: SIGSEGV in native code, as a broken extension would
    elif fault.kind == "hang":
        while True:
            time.sleep(3600)
    elif fault.kind == "slow":
        time.sleep(SLOW_S)
