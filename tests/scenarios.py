"""Scenario files for tests, written from Python values: one spelling of the pieces most tests share.

A test says what its scenario is about (its steps, the adapter it loads, the one field it changes) and takes
the rest from the named pieces below, instead of repeating twenty lines of TOML. Tests about the TOML text
itself (invalid TOML, a misspelt field, hostile text, error positions) keep their text inline: there the
text is the subject. conftest.py's MINIMAL stays text for the same reason (tests edit it with str.replace).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

TINY_LLAMA = "builtin:tiny-llama"
EAGER = {"compile": ["none"]}  # one case: no compile, so no compiler time
# One timed round, no warm-up: for tests about what a case does, not how fast.
FAST_TIMING = {"warmup": 0, "min_rounds": 1, "min_time_s": 0.0}
ONE_ADAPTER = {"a": {"rank": 4, "seed": 1}}
ONE_ADAPTER_SEED_0 = {"a": {"rank": 4}}  # the loader's default seed
LOAD_A = {"op": "load_adapter", "adapter": "a"}  # a step; a plain op name ("forward") is a step too

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def scenario_toml(
    name: str,
    steps: Sequence[str | Mapping[str, Any]],
    *,
    model: str = TINY_LLAMA,
    scenario: Mapping[str, Any] | None = None,
    matrix: Mapping[str, Any] | None = EAGER,
    timing: Mapping[str, Any] | None = None,
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    adapters: Mapping[str, Mapping[str, Any]] = ONE_ADAPTER,
    extra: str = "",
) -> str:
    """The text of a scenario file. `scenario` holds more fields of [scenario] (tags, timeout_s, ...);
    `tables` more top-level tables ([workload], [harness], ...); a table given as None is left out (the
    loader's defaults). `extra` is TOML text appended as is, after the last step (so a bare `key = value`
    belongs to that step)."""
    lines = ["[scenario]", *_pairs({"name": name, "model": model, **(scenario or {})})]
    for table, body in (("matrix", matrix), ("timing", timing), *(tables or {}).items()):
        if body is not None:
            lines += [f"[{_key(table)}]", *_pairs(body)]
    for key, body in adapters.items():
        lines += [f"[adapters.{_key(key)}]", *_pairs(body)]
    for step in steps:
        lines += ["[[steps]]", *_pairs({"op": step} if isinstance(step, str) else step)]
    return "\n".join(lines) + "\n" + textwrap.dedent(extra)


def toml_value(value: Any) -> str:
    """One TOML value: strings, numbers, booleans, lists and (inline) tables; anything else is a TypeError."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML's, except that TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(_pairs(value)) + " }" if value else "{}"
    raise TypeError(f"no TOML value for {type(value).__name__}: {value!r}")


def _pairs(table: Mapping[str, Any]) -> list[str]:
    return [f"{_key(k)} = {toml_value(v)}" for k, v in table.items()]


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_value(key)
