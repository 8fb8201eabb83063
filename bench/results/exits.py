"""What happened to a worker that left no result: its exit status, and what its log says about where it was.

The worker prints a phase line (PHASE_MARKER + "step 2 (load_adapter)") before each step and enables
faulthandler, which dumps the Python stack into the log on a native crash and on SIGUSR1 (the parent sends
that before it kills a worker that timed out). Pure functions of text: the parent passes the log in.
"""

from __future__ import annotations

import re
import signal

PHASE_MARKER = "peft-bench worker:"
PHASE_STARTED = "started"
PHASE_FINISHING = "writing the result"
STACK_DUMP_HEADER = "(most recent call first)"  # faulthandler's line before each thread's frames

# Why a signal usually ends a worker: a hint for the reader, not a diagnosis.
SIGNAL_HINTS: dict[str, str] = {
    "SIGKILL": "out of memory (the kernel's OOM killer), or killed from outside",
    "SIGABRT": "native crash: abort() in a library",
    "SIGSEGV": "native crash: segmentation fault in a library",
    "SIGBUS": "native crash: bus error (a truncated memory-mapped file?)",
    "SIGILL": "native crash: illegal instruction (a build for another CPU?)",
    "SIGFPE": "native crash: arithmetic fault",
    "SIGTERM": "terminated from outside",
    "SIGINT": "interrupted",
}
_OOM_LINE_RE = re.compile(r"MemoryError|out of memory|can't allocate memory|Cannot allocate memory", re.I)
_FRAME_RE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')
_LAST_LOG_BYTES = 1 << 20


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def where_it_was(log_text: str) -> str:
    """'during step 2 (load_adapter)', from the last phase line the worker printed."""
    phase = None
    for line in log_text.splitlines():
        if line.startswith(PHASE_MARKER):
            phase = line[len(PHASE_MARKER) :].strip()
    if phase is None:
        return "at start-up"
    if phase == PHASE_STARTED:
        return "before the first step, while loading the model and adapters"
    if phase == PHASE_FINISHING:
        return "after the last step, while writing the result"
    return f"during {phase}"


def innermost_frame(log_text: str) -> str | None:
    """The innermost Python frame of the crashing (or dumped) thread in a faulthandler dump: 'file:line in f'."""
    lines = log_text.splitlines()
    starts = [i for i, line in enumerate(lines) if STACK_DUMP_HEADER in line]
    if not starts:
        return None
    current = [i for i in starts if lines[i].lstrip().startswith("Current thread")]
    start = (current or starts)[-1]
    for line in lines[start + 1 :]:
        if not line.strip():
            break  # the end of that thread's frames
        m = _FRAME_RE.match(line)
        if m:  # other lines ("  Garbage-collecting") say what the thread did, not where
            return f"{m.group('file')}:{m.group('line')} in {m.group('func')}"
    return None


def describe_exit(returncode: int, *, timed_out: bool, timeout_s: float | None, log_text: str) -> str:
    """One line for a case whose worker produced no result."""
    where = where_it_was(log_text)
    if timed_out:
        what = f"timed out after {timeout_s:g} s {where}; the worker was killed"
    elif returncode < 0:
        name = signal_name(-returncode)
        hint = SIGNAL_HINTS.get(name)
        what = f"worker killed by {name} {where}" + (f" ({hint})" if hint else "")
    else:
        what = f"worker exited with code {returncode} {where} without writing a result"
    oom = next((line.strip() for line in log_text.splitlines() if _OOM_LINE_RE.search(line)), None)
    if oom:
        what += f": {oom[:200]}"
    frame = innermost_frame(log_text)
    if frame:
        what += f"; innermost Python frame: {frame}"
    return what


def read_log(path) -> str:
    """The end of a worker log as text (its last MiB: a runaway log must not cost the parent its memory)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _LAST_LOG_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
