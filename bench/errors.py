"""The suite's own error types: what the CLI turns into a clear message and exit code 2."""

from __future__ import annotations


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
