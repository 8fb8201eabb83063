"""How a run ends on a signal: SIGINT, SIGTERM and SIGHUP (the terminal or ssh session closed) all end it
with the finished cases kept and the rest `not_run`.

run_cases holds interrupts_deferred around everything from its first case to its final write, and
interrupts_raise around the cases: the first signal becomes an exception that stops the case loop (the
running worker is killed), every later one is only noted. No second signal, however soon after the first,
gets the default action (exit 143 before results.json is written).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, raised like KeyboardInterrupt: a BaseException, so that no `except Exception`
    swallows it."""


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """The first SIGINT raises KeyboardInterrupt, the first SIGTERM or SIGHUP raises Interrupted (only the
    main thread gets signals). Used inside interrupts_deferred: the handler puts the deferring handlers back
    before it raises, so a second signal while the worker is killed, or right after, is only noted; it can
    never take the default action (exit 143 with no results.json) before the final write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):
        for s, handler in old.items():
            signal.signal(s, handler)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.getsignal(s) for s in INTERRUPT_SIGNALS}
    for s in INTERRUPT_SIGNALS:
        signal.signal(s, on_signal)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[list[int]]:
    """From the start of the cases to the end of the final write, a signal is noted instead of aborting it
    (interrupts_raise, inside, turns the first one into an exception)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    old = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in INTERRUPT_SIGNALS}
    try:
        yield received
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
