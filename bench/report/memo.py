"""Each report figure worked out once per Results: a report renders one run as Markdown and as HTML, and a
table and its figure read the same rows; worked out again for each, the pooled bootstrap intervals of the
answers and the row lists were three times the work (most of `peft-bench report`'s time at 20,000 cases).

`per_results` keeps what a function returned for the last Results object it was given (held weakly: the cache
never keeps a run in memory), keyed by the function and its other arguments. Results and everything in them
are frozen records, so a value worked out for one object holds for as long as that object lives; an edited
copy (dataclasses.replace) is another object and gets its own values. Callers must treat the returned rows as
read-only (they are frozen records in lists: a caller slices or copies, never sorts or appends in place).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_owner: weakref.ref | None = None  # the Results the values below are of
_values: dict[tuple, Any] = {}


def _forget(ref: weakref.ref) -> None:
    if ref is _owner:  # the run the values are of is gone (a later run's values stay)
        _values.clear()


def _cache_of(results: Any) -> dict[tuple, Any]:
    global _owner
    if _owner is None or _owner() is not results:
        _values.clear()
        _owner = weakref.ref(results, _forget)
    return _values


def per_results(fn: F) -> F:
    """`fn(results, *args)` computed once per Results object and positional arguments (hashable)."""

    @functools.wraps(fn)
    def once(results: Any, *args: Any) -> Any:
        cache = _cache_of(results)
        key = (once, *args)
        if key not in cache:
            cache[key] = fn(results, *args)
        return cache[key]

    return once  # type: ignore[return-value]
