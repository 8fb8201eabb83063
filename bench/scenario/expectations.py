"""The `expect` tables and known failures of a scenario file -> Expectations, KnownFailure (bench.spec.schema).

What a step or the whole scenario claims about the library, checked as the loader reads it: a comparison
that no count could satisfy, an unknown expectation or matrix axis, a known failure without a reason are
ScenarioErrors naming the field.
"""

from __future__ import annotations

import math
import re

from bench.spec.counts import CountBound
from bench.spec.host import FACTS as HOST_FACTS
from bench.spec.schema import (
    EXPECTATIONS,
    MATRIX_AXES,
    SERVING_STRATEGIES,
    Expectations,
    KnownFailure,
    ScenarioExpectations,
)
from bench.spec.table import MAX_COUNT, Table, did_you_mean, short


def _comparison(t: Table, key: str) -> CountBound | None:
    """A count comparison ("== 0", ">= 1", or a bare count); refused when no count could satisfy it."""
    raw = t.get(key, (str, int), None)
    if raw is None:
        return None
    if isinstance(raw, int) and not abs(raw) <= MAX_COUNT:
        raise t.error(key, f"must be between -{MAX_COUNT} and {MAX_COUNT}, got {short(raw)}")
    try:
        cmp = CountBound.parse(raw)
    except ValueError as exc:
        raise t.error(key, str(exc)) from None
    if (why := cmp.satisfiable()) is not None:
        raise t.error(key, why)
    return cmp


def step_expectations(t: Table) -> Expectations:
    """A step's `expect` table."""
    recompiles, by_compile = _recompiles(t)
    e = Expectations(
        recompiles=recompiles,
        recompiles_by_compile=by_compile,
        graph_breaks=_comparison(t, "graph_breaks"),
        matches_reference=t.get("matches_reference", bool, None),
        raises=t.get("raises", str, None),
        wrong_responses=_comparison(t, "wrong_responses"),
        recompiles_after_warmup=_comparison(t, "recompiles_after_warmup"),
        faster_than=_faster_than(t),
        distinguishable=t.get("distinguishable", bool, None),
        cuda_graph_recordings=_comparison(t, "cuda_graph_recordings"),
    )
    if e.raises is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", e.raises):
        raise t.error("raises", f"expected an exception class name such as 'ValueError', got {e.raises!r}")
    t.finish()
    return e


def _recompiles(t: Table) -> tuple[CountBound | None, tuple[tuple[str, CountBound], ...]]:
    """`recompiles`: one comparison, or a table of them keyed by compile label (`{"aot_eager+static" = "== 1",
    "aot_eager+dynamic" = "== 0"}`); the rules check the labels against the matrix."""
    if not isinstance(t.data.get("recompiles"), dict):
        return _comparison(t, "recompiles"), ()
    sub = t.sub("recompiles")
    if not sub.data:
        raise t.error("recompiles", "an empty table: give a comparison per compile label, or one for all")
    pairs = tuple((label, _comparison(sub, label)) for label in sorted(sub.data))
    sub.finish()
    return None, pairs


def step_known_failures(t: Table) -> tuple[KnownFailure, ...]:
    """A step's `known_failure` (one) or `known_failures` (a list), never both."""
    kf = []
    if "known_failure" in t.data and "known_failures" in t.data:
        raise t.error("known_failure", "use either known_failure or known_failures")
    if "known_failure" in t.data:
        kf.append(known_failure(t.sub("known_failure")))
    for i, item in enumerate(t.get("known_failures", list, [])):
        kf.append(known_failure(Table(item, t.path(f"known_failures[{i}]"), t.source)))
    _refuse_overlap(t, kf)
    return tuple(kf)


def can_both_apply(a: KnownFailure, b: KnownFailure) -> bool:
    """Whether some case could meet both markers: the same expectation, and on every matrix axis both name,
    a value in common. Host scopes are not told apart (a machine may have both facts)."""
    if a.expectation != b.expectation:
        return False
    when_b = dict(b.when)
    return all(set(values) & set(when_b[axis]) for axis, values in a.when if axis in when_b)


def _refuse_overlap(t: Table, markers: list[KnownFailure]) -> None:
    """One marker per expectation and case: the decision takes the first that applies, so a second one for
    the same case would never be read, and what it describes would fail as "not the known bug"."""
    field = "known_failures" if "known_failures" in t.data else "known_failure"
    for j, later in enumerate(markers):
        for i, earlier in enumerate(markers[:j]):
            if can_both_apply(earlier, later):
                raise t.error(
                    field,
                    f"markers {i} and {j} both apply to {later.expectation!r} for the same cases; only the "
                    "first would be read: give them disjoint `when` values, or merge them into one",
                )


def _faster_than(t: Table) -> tuple[tuple[str, float], ...]:
    sub = t.sub("faster_than", {})
    pairs = []
    for strategy in sub.data:
        if strategy not in SERVING_STRATEGIES:
            raise sub.error(
                strategy,
                f"unknown strategy {strategy!r}{did_you_mean(strategy, SERVING_STRATEGIES)}; "
                f"allowed: {', '.join(SERVING_STRATEGIES)}",
            )
        factor = sub.get(strategy, float)
        if not 0 < factor <= 100:
            raise sub.error(strategy, f"a factor in (0, 100], got {short(factor)}")
        pairs.append((strategy, factor))
    sub.finish()
    return tuple(sorted(pairs))


def known_failure(t: Table) -> KnownFailure:
    expectation = t.choice("expectation", EXPECTATIONS)
    reason = t.get("reason", str)
    if not reason.strip():
        raise t.error("reason", "must say why (an upstream issue, a version)")
    when_t = t.sub("when", {})
    when = []
    for axis in when_t.data:
        if axis not in MATRIX_AXES:
            raise when_t.error(
                axis,
                f"unknown matrix axis{did_you_mean(axis, MATRIX_AXES)}; allowed: {', '.join(MATRIX_AXES)}",
            )
        when.append((axis, when_t.str_list(axis)))
    when_t.finish()
    host = t.str_list("host", ())
    for i, name in enumerate(host):
        if name not in HOST_FACTS:
            raise t.error(
                f"host[{i}]",
                f"unknown host fact {name!r}{did_you_mean(name, tuple(HOST_FACTS))}; "
                f"known: {', '.join(sorted(HOST_FACTS))}",
            )
    error, match, band = _fingerprint(t)
    t.finish()
    return KnownFailure(
        expectation=expectation,
        reason=reason,
        when=tuple(when),
        host=tuple(host),
        error=error,
        match=match,
        band=band,
    )


def _fingerprint(t: Table) -> tuple[str | None, str | None, tuple[float, float] | None]:
    """A known failure's `error`, `match` and `band` (KnownFailure): what the known bug looks like."""
    error = t.get("error", str, None)
    if error is not None and not error.isidentifier():
        raise t.error("error", f"an exception class name such as RuntimeError, got {short(error)}")
    match = t.get("match", str, None)
    if match is not None:
        try:
            re.compile(match)
        except re.error as exc:
            raise t.error("match", f"not a regular expression: {exc}") from None
    raw = t.get("band", list, None)
    band = None
    if raw is not None:
        if len(raw) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            raise t.error("band", f"[low, high]: two numbers, got {short(raw)}")
        lo, hi = float(raw[0]), float(raw[1])
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise t.error("band", f"[low, high] with finite low <= high, got {short(raw)}")
        band = (lo, hi)
    return error, match, band


def scenario_expectations(t: Table) -> ScenarioExpectations:
    """The scenario-level `expect` table: the case totals and their known failures."""
    total_recompiles = _comparison(t, "total_recompiles")
    total_graph_breaks = _comparison(t, "total_graph_breaks")
    kf = tuple(
        known_failure(Table(item, t.path(f"known_failures[{i}]"), t.source))
        for i, item in enumerate(t.get("known_failures", list, []))
    )
    for k in kf:
        if k.expectation not in ("recompiles", "graph_breaks"):
            raise t.error(
                "known_failures",
                "scenario-level known failures apply to 'recompiles' or 'graph_breaks' (the totals)",
            )
    _refuse_overlap(t, list(kf))
    t.finish()
    return ScenarioExpectations(
        total_recompiles=total_recompiles, total_graph_breaks=total_graph_breaks, known_failures=kf
    )
