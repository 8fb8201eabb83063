"""Atomic writes: temporary file in the same folder, fsync, rename. A reader never sees a partial file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.results.finite import encode
from bench.results.outfiles import refuse_symlink


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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """Strict JSON: NaN and infinity become null with a note (bench.results.finite)."""
    write_text(path, encode(data))
