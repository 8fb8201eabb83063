"""JSON without NaN or infinity: such floats become null, and a note says which value was there and where.

Python's json writes NaN and Infinity as bare words that are not JSON (JavaScript's JSON.parse, jq and
Go's encoding/json refuse the whole file). A measurement can be NaN (a model that overflows in fp16 gives NaN
logits and a NaN difference), so every file the suite writes goes through `encode`, and json.dumps runs with
allow_nan=False as the guard: a non-finite float that slipped past is an error, never a broken file.

The notes go in the document's own top-level `non_finite` object: {JSON path: "nan" | "inf" | "-inf"}, the
path relative to that document ("cases[2].steps[0].output.max_abs_diff", written by `child`, the same path
syntax bench.results.checks uses in its messages). Notes already there are kept, so loading a file and saving
it again gives the same bytes. bench.results.checks accepts a null where a number belongs only when a note
names it: a null without a reason is still refused.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

NOTES_KEY = "non_finite"
WORDS = ("nan", "inf", "-inf")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def child(where: str, key: str | int) -> str:
    """The JSON path of `key` inside `where`: a[3], a.b, or a.'model.layers.0' for a key that is not a name."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    key_text = key if _PLAIN_KEY.fullmatch(key) else repr(key)[:40]
    return f"{where}.{key_text}" if where else key_text


def word(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def replace_non_finite(data: Any, path: str = "") -> tuple[Any, dict[str, str]]:
    """(data with every NaN / infinite float replaced by None, {path: what it was})."""
    notes: dict[str, str] = {}

    def walk(x: Any, where: str) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            notes[where] = word(x)
            return None
        if isinstance(x, dict):
            return {k: walk(v, child(where, k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, child(where, i)) for i, v in enumerate(x)]
        return x

    return walk(data, path), notes


def encode(data: Any, *, indent: int | None = 1) -> str:
    clean, notes = replace_non_finite(data)
    if notes and isinstance(clean, dict):
        clean[NOTES_KEY] = {**(clean.get(NOTES_KEY) or {}), **notes}
    # A list or scalar document has nowhere to put notes and keeps only the nulls (none is written today).
    return json.dumps(clean, indent=indent, allow_nan=False) + "\n"
