"""Output files opened without following symbolic links, so that nothing is written outside --out.

A symlink planted at OUT/cases/<case>.log (or at the lock file) would make a plain open() overwrite the file
it points to, anywhere the user can write. Files are opened with O_NOFOLLOW (the kernel refuses a link as
the last component) and the folders the suite makes inside OUT are checked to be real folders, not links.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from bench.errors import BenchInputError


def file_kind(mode: int) -> str:
    """What an st_mode is, for a message: "a FIFO (named pipe)", "a device", "a socket", "a folder"..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def refuse_symlink(path: Path) -> None:
    """A BenchInputError if `path` is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise BenchInputError(
            f"{path.name} is a symbolic link (to {os.readlink(path)!r}); refusing to write through or over "
            "it: remove it, or use another --out",
            source=str(path),
        )


def ensure_folder(path: Path) -> Path:
    """Make `path` (one level, inside a folder already checked) and check it is a real folder."""
    path = Path(path)
    refuse_symlink(path)
    path.mkdir(exist_ok=True)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise BenchInputError("is not a folder", source=str(path))
    return path


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open with O_NOFOLLOW: a symlink at `path` is a BenchInputError naming it, never followed."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_symlink(Path(path))
        raise


def create_output(path: Path):
    """A new (or truncated) binary output file, opened without following a symlink at `path`."""
    fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    return os.fdopen(fd, "wb")


def check_own_folder(folder: Path, marker: str, made_by: str) -> None:
    """A folder a command fills and replaces as a whole (a site, a dataset): new, empty, or one it made
    before (it holds `marker`). Anything else is refused: rebuilding would replace a user's files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BenchInputError("exists and is not a folder", source=str(folder))
    if folder.is_dir() and not (folder / marker).is_file() and any(folder.iterdir()):
        raise BenchInputError(
            f"holds files and is not {made_by} (no {marker}): give a new or empty folder", source=str(folder)
        )
