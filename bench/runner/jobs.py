"""Several cases at a time (`peft-bench run --jobs N`): which cores each job gets, and the workers alive now.

Each job is one worker process at a time, pinned to its own cores (sched_setaffinity, inherited by a forked
case from its job's own preloaded worker) with torch's intra-op threads set to that many cores, so two jobs
never share a core: on a 2-core machine two single-threaded cases run side by side instead of two
two-threaded ones spinning against each other. What a case measures is still one process on its cores, but
the cache and memory bandwidth are shared: benchmarks/fidelity.py measures what that does to a forward
median, and the results record `jobs` (and each worker its cores) so that no one mistakes them.
"""

from __future__ import annotations

import os
import threading

from bench.errors import BenchInputError


def usable_cpus() -> tuple[int, ...]:
    """The cores this process may run on (its affinity mask, which a container or `taskset` narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def parse_jobs(text: str, cpus: tuple[int, ...]) -> int:
    """`--jobs N` or `auto` (one job per usable core). More jobs than cores would share cores: refused."""
    if text.strip() == "auto":
        return len(cpus)
    # ASCII digits only: int() also reads a full-width "２", an Arabic-Indic "٢", "1_0" and "+2".
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise BenchInputError(f"--jobs: expected a whole number or 'auto', got {text!r}")
    jobs = int(text)
    if jobs < 1:
        raise BenchInputError(f"--jobs: must be at least 1, got {jobs}")
    if jobs > len(cpus):
        raise BenchInputError(
            f"--jobs {jobs}: only {len(cpus)} usable core(s) here; jobs sharing a core would measure each other"
        )
    return jobs


def core_groups(jobs: int, cpus: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Split the usable cores into `jobs` disjoint groups, as even as they go (the first ones take the rest)."""
    if not 1 <= jobs <= len(cpus):
        raise ValueError(f"{jobs} jobs over {len(cpus)} cores")
    size, extra = divmod(len(cpus), jobs)
    groups, start = [], 0
    for k in range(jobs):
        end = start + size + (1 if k < extra else 0)
        groups.append(tuple(cpus[start:end]))
        start = end
    return groups


def threads_per_job(groups: list[tuple[int, ...]]) -> int:
    """torch's intra-op threads in each job's worker (its cores `groups`): OMP_NUM_THREADS where set, else
    the job's cores (the smallest group's, when they do not divide evenly)."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        return int(threads)
    return min(len(g) for g in groups)


class LiveWorkers:
    """The worker handles of the cases running now, so that the run's thread can kill them all on Ctrl-C
    (the job threads never see the signal). A worker that starts after the kill is killed as it registers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: set = set()
        self.cancelled = False

    def started(self, handle) -> None:
        with self._lock:
            if not self.cancelled:
                self._handles.add(handle)
                return
        handle.kill_group()

    def ended(self, handle) -> None:
        with self._lock:
            self._handles.discard(handle)

    def kill_all(self) -> None:
        with self._lock:
            self.cancelled = True
            handles = list(self._handles)
        for handle in handles:
            handle.kill_group()
