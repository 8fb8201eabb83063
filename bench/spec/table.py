"""Reading a TOML table with checked fields: every error names the file, the place and what is allowed.

Shared by the scenario loader and the ops (bench/ops), which parse their own step fields with it.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from bench.errors import ScenarioError

# Names become file and folder names: keep them to a safe alphabet so they never escape the output folder.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: `$` would let "x\n" through
# Limits that catch typos before they cost an hour (or all memory) of a CI machine.
MAX_BATCH_SIZE = 4096
MAX_SEQ_LEN = 65536
MAX_NEW_TOKENS = 4096
# batch_size x (seq_len + new_tokens): 2**20 tokens is a batch of 256 sequences of 4096 tokens; beyond it the
# activations alone outgrow any single accelerator, so it is a typo, not a benchmark.
MAX_BATCH_TOKENS = 2**20
MAX_RANK = 4096
MAX_COUNT = 10**9  # a recompile or graph-break count in an expectation
MISSING = object()


class Table:
    """A TOML table being read: remembers where it is for error messages and which keys were used."""

    def __init__(self, data: Any, where: str, source: str):
        if not isinstance(data, dict):
            raise ScenarioError(
                f"expected a table, got {type_name(data)}", source=source, field=where or None
            )
        self.data = data
        self.where = where
        self.source = source
        self.used: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str | None, message: str) -> ScenarioError:
        return ScenarioError(
            message, source=self.source, field=self.path(key) if key else (self.where or None)
        )

    def get(self, key: str, types: type | tuple[type, ...], default: Any = MISSING) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is MISSING:
                raise self._missing(key, "required field")
            return default
        value = self.data[key]
        types = types if isinstance(types, tuple) else (types,)
        # bool is an int in Python; a TOML `true` must not pass as a count.
        if isinstance(value, bool) and bool not in types:
            raise self.error(key, f"expected {type_names(types)}, got a boolean ({value!r})")
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # TOML integers are unbounded here; float() of 10**400 overflows
                raise self.error(key, f"number too large: {short(value)}") from None
        if not isinstance(value, types):
            raise self.error(key, f"expected {type_names(types)}, got {type_name(value)} ({short(value)})")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value}")
        return value

    def int_in(self, key: str, default: Any, lo: int, hi: int) -> int:
        value = self.get(key, int, default)
        if value is not None and not lo <= value <= hi:
            raise self.error(key, f"must be between {lo} and {hi}, got {short(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = MISSING) -> str:
        value = self.get(key, str, default)
        if value is not None and value not in choices:
            raise self.error(
                key, f"unknown value {value!r}{did_you_mean(value, choices)}; allowed: {', '.join(choices)}"
            )
        return value

    def str_list(self, key: str, default: Any = MISSING) -> tuple[str, ...]:
        value = self.get(key, (list, str), default)
        if isinstance(value, str):
            value = [value]
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{i}]", f"expected a string, got {type_name(item)}")
        return tuple(value)

    def sub(self, key: str, default: Any = MISSING) -> Table:
        self.used.add(key)
        value = self.data.get(key, {} if default is not MISSING else MISSING)
        if value is MISSING:
            raise self._missing(key, "required table")
        return Table(value, self.path(key), self.source)

    def _missing(self, key: str, what: str) -> ScenarioError:
        """A required key that is absent; a key here that looks like a typo of it is named first
        (`modle = ...` is what the user wrote, `model` only what is missing because of it)."""
        typo = difflib.get_close_matches(
            key, [str(k) for k in self.data if k not in self.used], n=1, cutoff=0.6
        )
        if typo:
            return self.error(
                typo[0], f"unknown key (did you mean {key!r}? {self.path(key)}: {what} is missing)"
            )
        return self.error(key, f"{what} is missing")

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise self.error(key, f"unknown key{did_you_mean(key, tuple(self.used))}")


def type_names(types: tuple[type, ...]) -> str:
    return " or ".join(
        {
            bool: "a boolean",
            int: "an integer",
            float: "a number",
            str: "a string",
            list: "a list",
            dict: "a table",
        }.get(t, t.__name__)
        for t in types
    )


def type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def short(value: Any) -> str:
    """A value for an error message: bounded, and safe for integers too long for repr (Python refuses to
    print an int of more than 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except ValueError:  # a list or table holding such an integer
        return f"{type_name(value)} too large to print"
    return text if len(text) <= 80 else text[:77] + "..."


def did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def checked_name(table: Table, key: str, value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise table.error(
            key,
            f"invalid name {value!r}: use letters, digits, '_', '.', '-' (at most 64, the first a letter or digit)",
        )
    return value
