"""One run per output folder, held while the run writes there, released by the kernel when the holder dies.

Two locks, because each misses a case the other catches:
- an exclusive flock on OUT/.peft-bench.runner.lock, opened without following symlinks (a link planted there would
  make the lock overwrite the file it points to). flock works across containers that share the folder.
- a Linux abstract-namespace socket named after the folder's real path. `rm -rf OUT` mid-run deletes the
  lock file, and a second run would flock a new file of the same name; the socket name does not live in the
  folder, so the second run is still refused. Nothing is written outside OUT for it.
A killed run never leaves a stale lock (--resume on its folder works at once).

The holder checks its lock file before each write (`FolderLock.check`): if the folder was removed or the
file replaced, the run stops instead of writing over what another run may have put there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchInputError
from bench.results.outfiles import open_no_follow

LOCK_FILE = ".peft-bench.runner.lock"


class OutputFolderLost(BenchInputError):
    """The output folder or its lock file was removed or replaced while this run held it."""


@dataclass(frozen=True)
class FolderLock:
    folder: Path
    path: Path
    identity: tuple[int, int]  # (st_dev, st_ino) of the lock file this run holds

    def check(self) -> None:
        """Raise OutputFolderLost unless OUT/.peft-bench.runner.lock is still the file this run locked."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
            now = (st.st_dev, st.st_ino)
        except OSError:
            now = None
        if now != self.identity:
            raise OutputFolderLost(
                "the output folder was removed or its lock file replaced while this run wrote to it; "
                "stopping without writing there again (another run may own the folder now)",
                source=str(self.folder),
            )


def _refused(folder: Path, holder: str) -> BenchInputError:
    return BenchInputError(
        f"another peft-bench run (pid {holder}) is writing to this folder; "
        "write to another folder, or wait for it to finish",
        source=str(folder),
    )


@contextlib.contextmanager
def _path_lock(folder: Path) -> Iterator[None]:
    """The abstract socket lock (Linux only; elsewhere the flock alone)."""
    if not sys.platform.startswith("linux"):
        yield
        return
    name = b"\0peft-bench-lock-" + hashlib.sha256(os.fsencode(os.path.realpath(folder))).hexdigest().encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(name)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise _refused(folder, _socket_holder(name)) from None
        sock.listen(1)  # so that a refused run can ask the holder's pid (SO_PEERCRED)
        yield
    finally:
        sock.close()


def _socket_holder(name: bytes) -> str:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            probe.connect(name)
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return str(struct.unpack("3i", creds)[0])
    except OSError:
        return "unknown"


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[FolderLock]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with _path_lock(folder):
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise _refused(folder, holder) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            st = os.fstat(fd)
            yield FolderLock(folder, path, (st.st_dev, st.st_ino))
        finally:
            os.close(fd)  # closing the descriptor releases the lock
