"""A large columnar copy's records built by two processes: this one from the first row group up, a spawned helper
from the last one down, until they meet.

Why: building a 20,000-case file's records (parsing each case's JSON and making about a million frozen
records) is 11 s of one CPU, most of a report's load. The helper sends the records it built back pickled, and
unpickling costs this process about 0.26 ms a case against 0.56 ms to parse and build it, so with a second
CPU the load takes about two thirds of the time.

Who builds a row group is decided by a claim in memory both processes share, taken under its lock: this
process claims upward from the first, the helper downward from the last, and each stops at the first group
the other holds. So the split follows how fast each really goes (a busy machine slows either), and every
group is built once. Whatever the helper does not deliver (it could not start, died, raised, or met a case
with non-finite notes) is built here, so the records never depend on the helper. The helper starts with
Ctrl-C blocked (bench.spec.processes) and is stopped as the load ends, whatever happened. The pipe carries pickles
between this process and the child it spawned, never data read from a file.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.results.columnar import ROW_GROUP_ROWS, row_group_data
from bench.results.finite import NOTES_KEY
from bench.results.records import CaseResult
from bench.spec.codec import from_dict
from bench.spec.processes import claim, cpus, ctrl_c_blocked, stop

# Fewer row groups than this (about 4,000 cases) are built here alone: the helper's start and imports (about
# 0.8 s) would cost about what it saves.
MIN_GROUPS = 8
FREE, HERE, HELPER = 0, 1, 2
NOT_SENT = object()  # a group the helper did not deliver


def records(datas: Iterable[dict[str, Any]]) -> list[CaseResult] | None:
    """Cases' JSON data as records, in order; None where one holds non-finite notes (then the whole file is
    read from results.json, as a load without a columnar copy does)."""
    out = []
    for data in datas:
        if data.get(NOTES_KEY):
            return None
        out.append(from_dict(CaseResult, data))
    return out


def built(path: Path, group: int) -> list[CaseResult] | None:
    """Row group `group`'s cases as records (`records`)."""
    return records(row_group_data(path, group))


def _helper(path: str, groups: int, claims: Any, conn: Any) -> None:
    """Claims groups from the last down and builds them, until it meets one this process holds; then sends
    each as (group, records), and None at the end (nothing more: this process then builds what is missing).
    The collector stays off, as in this process's load: the records hold no cycles."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        mine = {}
        for group in reversed(range(groups)):
            if not claim(claims, group, HELPER, FREE):
                break
            mine[group] = built(Path(path), group)
            if mine[group] is None:  # non-finite notes: the whole file is read from the JSON
                break
        for group in sorted(mine):
            conn.send((group, mine.pop(group)))  # one group at a time: the pipe never holds more than one
        conn.send(None)
    except Exception:  # noqa: BLE001 - this process builds what is not delivered, and raises it there
        pass
    finally:
        conn.close()
        if collecting:
            gc.enable()


def shareable(rows_per_group: list[int]) -> bool:
    """Whether a file is worth two builders: a second CPU, at least MIN_GROUPS row groups, none larger than
    a save writes (ROW_GROUP_ROWS: a group is built whole, so a file written otherwise is streamed as before)."""
    return len(rows_per_group) >= MIN_GROUPS and max(rows_per_group) <= ROW_GROUP_ROWS and cpus() >= 2


def cases(path: Path, groups: int, *, helper: bool = True) -> list[CaseResult] | None:
    """Every case of the columnar copy at `path` as records, in file order; None where a case holds
    non-finite notes. A helper builds the last row groups (`helper=False`, or none to be had: all here)."""
    if not helper:
        return _all_here(path, range(groups))
    ctx = multiprocessing.get_context("spawn")
    claims = ctx.Array("b", groups)
    try:
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_helper,
            args=(str(path), groups, claims, child),
            daemon=True,
            name="peft-bench-load",
        )
        with ctrl_c_blocked():
            process.start()
        child.close()
    except (OSError, RuntimeError, ValueError):  # no process to be had: everything is built here
        return _all_here(path, range(groups))
    try:
        return _shared(path, groups, claims, parent, process)
    finally:
        parent.close()
        # Nothing more is wanted from it: it has sent its last message, or this load ended early.
        stop(process)


def _all_here(path: Path, groups: range) -> list[CaseResult] | None:
    out: list[CaseResult] = []
    for group in groups:
        got = built(path, group)
        if got is None:
            return None
        out += got
    return out


def _shared(path: Path, groups: int, claims: Any, conn: Any, process: Any) -> list[CaseResult] | None:
    out: list[CaseResult] = []
    first_theirs = groups
    for group in range(groups):
        if not claim(claims, group, HERE, FREE):
            first_theirs = group
            break
        got = built(path, group)
        if got is None:
            return None
        out += got
    received = _received(conn, process)
    for group in range(first_theirs, groups):
        got = received.pop(group, NOT_SENT)
        if got is NOT_SENT:  # not delivered: built here
            got = built(path, group)
        if got is None:
            return None
        out += got
    return out


def _received(conn: Any, process: Any) -> dict[int, Any]:
    """The helper's (group, records) until its None; what arrived so far where it died or closed the pipe."""
    got: dict[int, Any] = {}
    try:
        while True:
            while not conn.poll(0.2):
                if not process.is_alive() and not conn.poll(0):  # died without a word
                    return got
            item = conn.recv()
            if item is None:
                return got
            group, records = item
            got[group] = records
    except (EOFError, OSError):
        return got
