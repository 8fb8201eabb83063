"""What the memory, memory-growth and recompile sections show, as rows: pure functions from Results to frozen
records, as in bench.report.data.

Each table is worked out as its steps (or cases) first, which is cheap, and rows only for the ones a table
lists or a figure draws (bench.report.data.Listed); `*_rows` gives every row, for callers that want them
all. The report never makes a row it does not show: 20,000 cases hold about 110,000 steps with memory
figures, and a row for each was most of these sections' time.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.ops import op_named
from bench.report.data import MAX_TABLE_ROWS, Listed, listed, steps_with
from bench.report.memo import per_results
from bench.results.records import CaseResult, Results, StepRecord
from bench.results.stats import slope


@dataclass(frozen=True)
class MemoryRow:
    case_id: str
    step: int
    op: str
    rss_before_bytes: int | None
    rss_after_bytes: int | None
    rss_peak_bytes: int | None
    rss_delta_bytes: int | None
    cuda_allocated_peak_bytes: int | None
    unavailable: str  # the reasons the record gives for missing figures (first one)


@dataclass(frozen=True)
class GrowthSeries:
    """RSS after each load (a repeat_load step's repetitions, or the case's load steps), from the first."""

    case_id: str
    label: str  # e.g. "repeat_load hotswap x20 (step 4)" or "load steps 2, 5"
    rss_after_bytes: tuple[int, ...]
    growth_bytes_per_load: float | None  # least-squares slope
    adapter_bytes_per_load: int | None


@dataclass(frozen=True)
class RecompileRow:
    case_id: str
    step: int
    op: str
    recompiles: int
    frame_compiles: int
    graph_breaks: int
    compile_time_s: float
    strict: bool
    first_reason: str


# Memory ---------------------------------------------------------------------------------------------------


def memory_steps(results: Results) -> list[tuple[CaseResult, StepRecord]]:
    return steps_with(results, "memory")


def memory_row(c: CaseResult, s: StepRecord) -> MemoryRow:
    m = s.memory
    return MemoryRow(
        c.case_id,
        s.index,
        s.op,
        m.rss_before_bytes,
        m.rss_after_bytes,
        m.rss_peak_bytes,
        m.rss_delta_bytes,
        m.cuda_allocated_peak_bytes,
        next(iter(m.unavailable.values()), ""),
    )


def memory_rows(results: Results) -> list[MemoryRow]:
    return [memory_row(c, s) for c, s in memory_steps(results)]


def memory_listed(results: Results, limit: int = MAX_TABLE_ROWS) -> Listed:
    return listed(memory_steps(results), memory_row, limit)


def memory_by_case(results: Results, limit: int = MAX_TABLE_ROWS) -> Listed:
    """(case id, its memory rows) for the first `limit` cases with memory figures, and how many cases have
    them: the per-case summary table's rows."""
    cases = [c for c in results.cases if any(s.memory is not None for s in c.steps)]
    return Listed(
        [(c.case_id, [memory_row(c, s) for s in c.steps if s.memory is not None]) for c in cases[:limit]],
        len(cases),
    )


# Growth ---------------------------------------------------------------------------------------------------


def _slope(values: list[float]) -> float | None:
    """Least-squares slope over the index; None for fewer than two values (nothing to fit)."""
    return slope(values) if len(values) >= 2 else None


def _growth_parts(c: CaseResult) -> list[tuple]:
    """The case's growth series, each as (case, label, RSS after each load, growth per load as recorded,
    adapter bytes, whether the growth is to be fitted instead): its repeat_load steps' repetitions; without
    one, the sum of its load steps' own RSS changes (when it has several), so that the compiles and calls
    between them are left out."""
    repeats = [s for s in c.steps if getattr(s, "repeat", None) is not None]
    if repeats:
        return [
            (
                c,
                f"repeat_load {s.repeat.mode} x{s.repeat.count} (step {s.index})",
                tuple(s.repeat.rss_after_bytes),
                s.repeat.rss_growth_bytes_per_rep,
                s.repeat.adapter_bytes_per_rep,
                False,
            )
            for s in repeats
        ]
    loads = [s for s in c.steps if op_named(s.op).adds_adapter and s.memory]
    deltas = [s.memory.rss_delta_bytes for s in loads]
    if len(loads) < 2 or any(d is None for d in deltas):
        return []
    series = [loads[0].memory.rss_before_bytes]
    for d in deltas:
        series.append(series[-1] + d)
    sizes = [s.adapter_bytes for s in loads if s.adapter_bytes]
    label = "load steps " + ", ".join(str(s.index) for s in loads) + " (their own RSS changes)"
    return [(c, label, tuple(series[1:]), None, max(sizes) if sizes else None, True)]


def _growth(c: CaseResult, label: str, rss: tuple, growth: float | None, size: int | None, fit: bool):
    # The fit is made for the series shown only: a least-squares fit per case was 0.5 s at 20,000 cases.
    return GrowthSeries(c.case_id, label, rss, _slope([float(x) for x in rss]) if fit else growth, size)


@per_results
def growth_parts(results: Results) -> list[tuple]:
    return [part for c in results.cases for part in _growth_parts(c)]


def growth_series(results: Results) -> list[GrowthSeries]:
    """repeat_load steps: RSS after each repetition. Cases without one but with several load steps: the sum of
    the load steps' own RSS changes."""
    return [_growth(*part) for part in growth_parts(results)]


def growth_listed(results: Results, limit: int = MAX_TABLE_ROWS) -> Listed:
    return listed(growth_parts(results), _growth, limit)


# Recompiles -----------------------------------------------------------------------------------------------


def recompile_steps(results: Results) -> list[tuple[CaseResult, StepRecord]]:
    return steps_with(results, "compile")


def recompile_row(c: CaseResult, s: StepRecord) -> RecompileRow:
    k = s.compile
    return RecompileRow(
        c.case_id,
        s.index,
        s.op,
        k.recompiles,
        k.frame_compiles,
        k.graph_breaks,
        k.compile_time_s,
        s.strict,
        (k.recompile_reasons or k.graph_break_reasons or ("",))[0],
    )


def recompile_rows(results: Results) -> list[RecompileRow]:
    return [recompile_row(c, s) for c, s in recompile_steps(results)]


def recompile_listed(results: Results, limit: int = MAX_TABLE_ROWS) -> Listed:
    return listed(recompile_steps(results), recompile_row, limit)


def _compiled_anything(s: StepRecord) -> bool:
    return bool(s.compile.frame_compiles or s.compile.recompiles or s.compile.graph_breaks)


def has_compile_activity(rows: list[RecompileRow]) -> list[str]:
    """Cases whose steps compiled anything: the ones a recompile table is about."""
    seen: dict[str, bool] = {}
    for r in rows:
        seen[r.case_id] = seen.get(r.case_id, False) or bool(
            r.frame_compiles or r.recompiles or r.graph_breaks
        )
    return [cid for cid, active in seen.items() if active]


def recompile_table(results: Results, limit: int = MAX_TABLE_ROWS) -> Listed:
    """The recompile table's rows: the steps of the cases that compiled anything (has_compile_activity) where
    dynamo did something, or was told to fail."""
    shown = []
    for c in results.cases:
        steps = [s for s in c.steps if s.compile is not None]
        if any(_compiled_anything(s) for s in steps):
            shown += [(c, s) for s in steps if s.strict or _compiled_anything(s)]
    return listed(shown, recompile_row, limit)
