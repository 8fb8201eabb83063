"""Output and cache paths checked before any work starts: a clear error instead of a traceback mid-run.

Each check raises BenchInputError naming the path. They only look (and, for a folder's writability, create
and remove one temporary file), so a refused command leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import stat
import tempfile
from pathlib import Path

from bench.engine.sources.cache import ENV_VAR
from bench.engine.sources.cache import default_cache_root as default
from bench.errors import BenchInputError
from bench.results.outfiles import file_kind, refuse_symlink


def path_arg(text: str) -> Path:
    """argparse type for paths: `--out ""` would be Path("."), the current folder, without a word."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path (use . for the current folder)")
    return Path(text)


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        if p.is_symlink():  # a dangling link: os.path.exists is False for it, and mkdir would fail on it
            raise BenchInputError(f"{p} is a link to a missing target", source=str(path))
        p = p.parent
    return p


def _writable(folder: Path, source: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".peft-bench-probe-"):
            pass
    except OSError as exc:
        where = "" if folder == source.absolute() else f" ({folder}, where it would be created)"
        raise BenchInputError(
            f"cannot write there{where}: {exc.strerror or exc}", source=str(source)
        ) from None


def check_out_folder(path: Path, *, lock_file: str | None = None) -> None:
    """A folder a command will write into: it is one (or can be made), writable, its lock file a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BenchInputError("exists and is not a folder: give a folder", source=str(path))
    base = _nearest_existing(path)
    if not base.is_dir():
        raise BenchInputError(f"cannot create a folder under {base}: it is a file", source=str(path))
    _writable(base, path)
    if lock_file and path.is_dir():
        lock = path / lock_file
        refuse_symlink(lock)  # the lock is opened O_NOFOLLOW: say so now, not after the scenarios are read
        try:
            mode = os.lstat(lock).st_mode  # never opened here: a FIFO would block
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            raise BenchInputError(
                f"its lock file {lock_file} is not a regular file: {file_kind(mode)}: remove it",
                source=str(path),
            )


def check_out_file(path: Path) -> None:
    """A file a command will write (a table): its folder exists, and the file is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise BenchInputError("is a folder: give a file name", source=str(path))
    parent = path.absolute().parent
    if not parent.is_dir():
        why = "is not a folder" if parent.exists() else "does not exist"
        raise BenchInputError(f"its folder {parent} {why}", source=str(path))
    _writable(parent, path)


def check_named_out_file(path: Path, given: str) -> None:
    """check_out_file, the error naming the option or variable the path came from (`--junit-xml`,
    `$GITHUB_STEP_SUMMARY`)."""
    try:
        check_out_file(path)
    except BenchInputError as exc:
        raise BenchInputError(f"{given}: {exc.detail}", source=exc.source) from None


def cache_root(path: Path, given: str = "--cache") -> Path:
    """A cache folder with ~ expanded (~unknownuser/... is an error, not a traceback), and usable; an error
    names where the path came from (`given`)."""
    try:
        expanded = Path(path).expanduser()
    except RuntimeError as exc:  # pathlib: "Could not determine home directory."
        raise BenchInputError(f"cannot expand ~: {exc}", source=str(path)) from None
    try:
        check_out_folder(expanded)
    except BenchInputError as exc:
        raise BenchInputError(f"{given}: {exc.detail}", source=exc.source) from None
    return expanded


def default_cache_root() -> Path:
    try:
        root = default()
    except RuntimeError as exc:
        raise BenchInputError(
            f"cannot expand ~: {exc}", source=f"${ENV_VAR}={os.environ.get(ENV_VAR)}"
        ) from None
    return cache_root(root, f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the default cache")
