"""Atomic writes: temporary file in the same folder, fsync, rename. A reader never sees a partial file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.errors import naming_file
from bench.results.finite import encode
from bench.results.outfiles import refuse_symlink


def current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    def dump(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    replace_atomically(Path(path), dump)


def replace_atomically(path: Path, dump: Callable[[Path], None]) -> None:
    """`dump(tmp)` writes the new content to a temporary file beside `path`; it is fsynced and renamed over
    `path`, so a reader sees the old file or the new one, never a part."""
    path = Path(path)
    refuse_symlink(path)  # os.replace would replace the link; a user who put one there meant something
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # mkstemp makes the file 0600; a report or results file is for whoever may read the folder, as
        # open(path, "w") would leave it: 0666 less the umask.
        os.chmod(tmp, 0o666 & ~current_umask())
        dump(Path(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        named = naming_file(exc, path)  # a write() error names no file: name the one it was for
        if named is not exc:
            raise named from None
        raise


def write_json(path: Path, data: Any) -> None:
    """Strict JSON: NaN and infinity become null with a note (bench.results.finite)."""
    write_text(path, encode(data))


def write_json_in(dir_fd: int, name: str, data: Any) -> None:
    """write_json into the folder `dir_fd` was opened on, whatever its path names now.

    A worker opens its run's cases folder when it starts and writes its result through that handle: if the
    folder was removed meanwhile (rm -rf OUT) and a new run made one at the same path, the write fails (a
    removed folder takes no new file) instead of landing among the new run's files (issue 32)."""
    text = encode(data)
    tmp = f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
