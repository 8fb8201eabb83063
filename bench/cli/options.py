"""Checks of run options that the parser alone cannot make, done before anything runs (exit 2).

Pure functions: the caller passes what the machine has, so tests can pass any machine.
"""

from __future__ import annotations

import math
import resource

from bench.errors import BenchInputError

MIB = 2**20
# The longest --timeout: a week. Beyond it (or infinite) the wait's deadline arithmetic overflows in
# places (select, threading) that would fail inside the first case instead of here.
MAX_TIMEOUT_S = 7 * 24 * 3600.0


def memory_limit_bytes(limit_mb: int, *, machine_bytes: int, hard_limit_bytes: int) -> int:
    """--memory-limit-mb as bytes for RLIMIT_AS, or a BenchInputError.

    A limit above the machine's memory (RAM + swap) limits nothing a case could reach, and one above the
    process's hard RLIMIT_AS (or beyond what rlim_t holds) makes setrlimit fail in every worker, after the
    fork: each case would be an `error` for an option the user could have fixed at once.
    """
    if limit_mb <= 0:
        raise BenchInputError(f"--memory-limit-mb: must be greater than 0, got {limit_mb}")
    limit = limit_mb * MIB
    if limit > machine_bytes:
        raise BenchInputError(
            f"--memory-limit-mb: {limit_mb} MiB is more than this machine has "
            f"({machine_bytes // MIB} MiB of RAM and swap); give at most {machine_bytes // MIB}"
        )
    if hard_limit_bytes != resource.RLIM_INFINITY and limit > hard_limit_bytes:
        raise BenchInputError(
            f"--memory-limit-mb: {limit_mb} MiB is above this process's hard address-space limit "
            f"({hard_limit_bytes // MIB} MiB, ulimit -Hv)"
        )
    return limit


def timeout_seconds(timeout_s: float, option: str = "--timeout") -> float:
    """--timeout (or the pytest plugin's `option`), or a BenchInputError for one that is not a finite time up
    to MAX_TIMEOUT_S."""
    if not (math.isfinite(timeout_s) and 0 < timeout_s <= MAX_TIMEOUT_S):
        raise BenchInputError(
            f"{option}: expected seconds greater than 0 and at most {MAX_TIMEOUT_S:.0f} (a week), got {timeout_s}"
        )
    return timeout_s


def machine_memory_bytes() -> int:
    import psutil

    return psutil.virtual_memory().total + psutil.swap_memory().total


def hard_address_space_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_AS)[1]
