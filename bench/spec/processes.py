"""Helper processes the suite spawns beside a command's own (the report's figure drawer, a large load's second
builder): how many CPUs there are for them, and their start with Ctrl-C blocked."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def ctrl_c_blocked() -> Iterator[None]:
    """SIGINT blocked while a helper is started. A spawned process keeps the signal mask it was started
    with, through exec and Python's start-up, so the helper never sees Ctrl-C: its start and imports take
    about a second, where Ctrl-C would print a traceback of its own. The caller gets a Ctrl-C of these
    milliseconds as soon as the mask is restored, and stops its helper as it leaves."""
    if not hasattr(signal, "pthread_sigmask"):  # not on POSIX: the helper is started as it is
        yield
        return
    # A spawn starts multiprocessing's resource tracker first, which blocks SIGINT for its own start and then
    # unblocks it: started before the mask is set, it cannot unblock it under the helper's start.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def claim(claims, index: int, who: int, free: int = 0) -> bool:
    """Take item `index` of a shared claims array (multiprocessing's Array) for `who` if nobody holds it: under
    the array's lock, so that of two processes claiming the same item only one gets it."""
    with claims.get_lock():
        if claims[index] != free:
            return False
        claims[index] = who
        return True


def stop(process, *, grace_s: float = 0.0) -> None:
    """Stop a helper process: given `grace_s` to exit on its own, then terminated, then killed; always joined."""
    if grace_s:
        process.join(timeout=grace_s)
    if process.is_alive():
        process.terminate()
        process.join(timeout=5)
    if process.is_alive():
        process.kill()
        process.join()
