"""Atomic writes: temporary file in the same folder, fsync, rename. A reader never sees a partial file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from bench.results.finite import encode
from bench.results.outfiles import refuse_symlink


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    refuse_symlink(path)  # os.replace would replace the link; a user who put one there meant something
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a report or results file is for whoever may read the folder, as
        # open(path, "w") would leave it: 0666 less the umask.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
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
