"""One run per output folder: an exclusive flock on a file in it, held while the run writes there.

flock is released by the kernel when the holder dies, so a killed run never leaves a stale lock behind
(--resume on its folder works at once), while a second run started on the same folder is refused instead of
interleaving its results with the first one's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from bench.errors import BenchInputError

LOCK_FILE = ".peft-bench.lock"


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise BenchInputError(
                f"another peft-bench run (pid {holder}) is writing to this folder; "
                "use another --out, or wait for it to finish",
                source=str(folder),
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
