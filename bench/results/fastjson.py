"""JSON parsing for the columnar copy's text columns: orjson where it is installed, the standard library
otherwise.

A load of 20,000 cases parses about 450 MB of JSON text (each case's `record`); orjson parses it about 2.8
times as fast as `json` here (5,000 records: 2.1 s against 0.74 s of CPU). It holds a little more memory
once parsed (a 20,000-case load peaked at 1,498 MB against 1,433 MB). Only the columnar copy's texts come here: save wrote them from
records, whose values are finite and whose integers fit in 64 bits (bench.results.checks refuses a results
file with a larger one: orjson would read it as a float, where `json` keeps the integer), so both parsers
read them alike. A text orjson refuses anyway goes to the standard library, which parses it or raises its
own error, so a result never depends on which parser is installed.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # an optional speed-up (the `report` extra): the standard library reads the same texts
    orjson = None


def loads(text: str) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # then json parses it, or raises its own error as it would without orjson
    return json.loads(text)


def loads_utf8(data: bytes | memoryview) -> Any:
    """loads() of UTF-8 bytes (a slice of an Arrow column's buffer: no str is made for orjson)."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(bytes(data))
