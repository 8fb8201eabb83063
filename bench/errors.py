"""The suite's own error types: what the CLI turns into a clear message and exit code 2."""

from __future__ import annotations

import errno
import os


class BenchInputError(Exception):
    """Bad input from the user (a scenario file, a results file, a command-line value).

    The message names where the problem is (file, step, field) so the CLI can print it as is, with no traceback.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.detail = message
        parts = [p for p in (source, field) if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ScenarioError(BenchInputError):
    """A scenario file that cannot be run as written."""


def error_text(exc: BaseException) -> str:
    """An exception as one bounded line: its class and message, whitespace collapsed."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}"


# Errors that say the output folder takes no more bytes: a full disk, a user's quota, the file-size limit.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
EXIT_OUTPUT_FULL = 74  # EX_IOERR of sysexits.h: not bad input (2), not a failed case (1)


class OutputFull(Exception):
    """The results could not be written because the output folder takes no more bytes. The CLI prints the
    message (one line: what, where, what was kept, how to finish) and exits EXIT_OUTPUT_FULL."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def naming_file(exc: BaseException, path: object) -> BaseException:
    """A full disk's error with `path` as its file where it names none (a write() error, pyarrow's own), so
    the one line the CLI prints says which file could not be written; any other error as it is. The system's
    words for the errno: pyarrow's message wraps them in its own."""
    if is_disk_full(exc) and not exc.filename:
        return OSError(exc.errno, os.strerror(exc.errno), str(path))
    return exc
