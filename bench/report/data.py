"""What a report shows, as rows: pure functions from Results to frozen records, shared by Markdown and HTML.

Every figure keeps what a reader needs to judge it: n and spread for repeated calls, n=1 for single calls,
and a reason where a figure could not be measured (None, never 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.judge.figures import is_hotswap, switch_ms
from bench.report import answers
from bench.report.memo import per_results
from bench.results.brief import clipped
from bench.results.failures import output_wrong, unverified_reason
from bench.results.measures import TimingStats
from bench.results.records import FAILING_VERDICTS, CaseResult, Results, StepRecord

# Rows a per-case table or list of the report shows: a run of 20,000 cases would make a report of
# hundreds of MB. The figures behind every row stay in the results files the note names.
MAX_TABLE_ROWS = 200
TABLES_NOTE = "every case is in results.json, and as a table in results.csv and results.parquet"
# Rows a figure draws of its table's (bench.report.html): beyond a few dozen labelled rows a figure is no
# longer read, and each row costs drawing time.
MAX_FIGURE_ROWS = 40


@dataclass(frozen=True)
class LatencyRow:
    case_id: str
    scenario: str
    precision: str
    compile: str
    hotswap_path: str
    step: int
    op: str
    n: int
    median_ms: float
    iqr_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    samples_ms: tuple[float, ...]
    # The step's output did not match its reference: these are timings of a wrong answer (flagged).
    wrong_output: bool = False


WRONG_OUTPUT = "WRONG OUTPUT: did not match the reference; not a speed-up"


@dataclass(frozen=True)
class SwitchRow:
    """One way of changing the adapter: a hotswap step, or the case's plain load it is set against."""

    case_id: str
    step: int
    kind: str  # "hotswap (peft)" | "hotswap (transformers)" | "reload"
    op_ms: float | None
    first_call_ms: float | None
    total_ms: float | None
    recompiles: int | None
    copy_floor_ms: float | None
    adapter_bytes: int | None
    over_reload: float | None  # total / the case's reload total
    over_floor: float | None  # the call alone / the copy floor: how far the swap is from moving bytes only
    note: str  # why a figure is missing, or what the step raised
    n: int = 1  # calls behind op_ms: 1, or a repeat_load's swaps (op_ms is then their median)
    op_iqr_ms: float | None = None  # their interquartile range (None for a single call)


@dataclass(frozen=True)
class FailingCase:
    case_id: str
    verdict: str
    reason: str  # one line: which expectation, which guard, which difference
    repro: str | None = None  # path of the reproduction script, relative to the results folder


@dataclass(frozen=True)
class Listed:
    """The first rows of a table (at most the limit asked for) and how many it has in all. A table lists
    MAX_TABLE_ROWS and a figure draws MAX_FIGURE_ROWS, so only those rows are made: a row for every step of a
    20,000-case run (about 110,000 for each per-step table) was 2.5 s of a report's time."""

    rows: list
    total: int


def as_listed(rows: list | Listed) -> Listed:
    """Rows a caller made in full, or already listed, as a Listed."""
    return rows if isinstance(rows, Listed) else Listed(rows, len(rows))


def listed(items: list[tuple], make: Callable[..., Any], limit: int = MAX_TABLE_ROWS) -> Listed:
    """`make(*item)` for the first `limit` items, and how many there are."""
    return Listed([make(*item) for item in items[:limit]], len(items))


@per_results
def steps_with(results: Results, figures: str) -> list[tuple[CaseResult, StepRecord]]:
    """The steps that recorded `figures` (a StepRecord field: "timing", "memory", "compile"), each with its
    case, in run order: a per-step table's rows, before any is made."""
    return [(c, s) for c in results.cases for s in c.steps if getattr(s, figures) is not None]


def latency_steps(results: Results) -> list[tuple[CaseResult, StepRecord]]:
    return steps_with(results, "timing")


def latency_row(c: CaseResult, s: StepRecord) -> LatencyRow:
    t = s.timing
    return LatencyRow(
        c.case_id,
        c.scenario,
        c.params.get("precision", ""),
        c.params.get("compile", ""),
        c.params.get("hotswap_path", ""),
        s.index,
        s.op,
        t.n,
        t.median_ms,
        t.iqr_ms,
        t.p90_ms,
        t.min_ms,
        t.max_ms,
        t.samples_ms,
        wrong_output=output_wrong(s),
    )


def latency_rows(results: Results) -> list[LatencyRow]:
    """Every row of the latency table (latency_listed: the first ones, as the report shows them)."""
    return [latency_row(c, s) for c, s in latency_steps(results)]


def latency_listed(results: Results, limit: int = MAX_TABLE_ROWS) -> Listed:
    return listed(latency_steps(results), latency_row, limit)


def _switch_row(case: CaseResult, s: StepRecord, kind: str, reload_total: float | None) -> SwitchRow:
    total = switch_ms(s)
    wrong = output_wrong(s)
    if s.error:
        note = f"raised {s.error.split(':')[0]}"
    elif total is None:
        note = "not measured: the step made no model call"
    elif wrong:
        note = WRONG_OUTPUT
    elif reload_total is None and kind != "reload":
        note = "no plain load into the model the swap ran on (after compile) in this case: no x reload"
    else:
        note = ""
    return SwitchRow(
        case_id=case.case_id,
        step=s.index,
        kind=kind,
        op_ms=s.op_time_ms,
        first_call_ms=s.first_call_ms,
        total_ms=total,
        recompiles=s.compile.recompiles if s.compile else None,
        copy_floor_ms=s.copy_floor_ms,
        adapter_bytes=s.adapter_bytes,
        over_reload=(total / reload_total) if total is not None and reload_total and not wrong else None,
        over_floor=(s.op_time_ms / s.copy_floor_ms) if s.op_time_ms is not None and s.copy_floor_ms else None,
        note=note,
    )


def _floor_for(case: CaseResult, size: int | None) -> float | None:
    """The copy floor a step of this case measured for this many bytes (repeat_load steps measure none)."""
    return next(
        (s.copy_floor_ms for s in case.steps if size and s.adapter_bytes == size and s.copy_floor_ms), None
    )


def _repeat_row(case: CaseResult, s: StepRecord) -> SwitchRow:
    """A repeat_load hotswap step: the median of its swaps (no model call between them, so no total)."""
    r = s.repeat
    t = TimingStats.from_samples(list(r.op_time_ms))
    floor = _floor_for(case, r.adapter_bytes_per_rep)
    return SwitchRow(
        case_id=case.case_id,
        step=s.index,
        kind=f"hotswap ({case.params.get('hotswap_path', '?')}), repeat_load x{r.count}",
        op_ms=t.median_ms,
        first_call_ms=None,
        total_ms=None,
        recompiles=s.compile.recompiles if s.compile else None,
        copy_floor_ms=floor,
        adapter_bytes=r.adapter_bytes_per_rep,
        over_reload=None,
        over_floor=(t.median_ms / floor) if floor else None,
        note=f"call ms: median of {t.n} swaps (IQR {t.iqr_ms:.3g} ms); no model call between them, so no first "
        "call or total",
        n=t.n,
        op_iqr_ms=t.iqr_ms,
    )


@per_results
def switch_rows(results: Results) -> list[SwitchRow]:
    """Each hotswap step beside its case's plain load (swap + first call against load + first call), and each
    repeat_load hotswap step's swaps."""
    out = []
    for c, reload in zip(results.cases, answers.reload_steps(results), strict=True):
        swaps = [s for s in c.steps if is_hotswap(s) and s.status != "not_run"]
        repeats = [s for s in c.steps if s.repeat is not None and s.repeat.mode == "hotswap"]
        if not swaps and not repeats:
            continue
        reload_total = switch_ms(reload) if reload else None
        if reload:
            out.append(_switch_row(c, reload, "reload", reload_total))
        for s in swaps:
            out.append(_switch_row(c, s, f"hotswap ({c.params.get('hotswap_path', '?')})", reload_total))
        out += [_repeat_row(c, s) for s in repeats]
    return out


@per_results
def verdict_matrix(results: Results) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """(rows, columns, cells): rows are scenarios (with the hotswap path where it varies), columns
    precision / compile setting; a cell is a verdict."""
    paths: dict[str, set[str]] = {}
    for c in results.cases:
        paths.setdefault(c.scenario, set()).add(c.params.get("hotswap_path", ""))
    # dicts as ordered sets: a list's `in` made this quadratic in the scenarios (20,000 copies: seconds)
    rows: dict[str, None] = {}
    cols: dict[str, None] = {}
    cells: dict[tuple[str, str], str] = {}
    for c in results.cases:
        row = c.scenario + (f" ({c.params.get('hotswap_path')})" if len(paths[c.scenario]) > 1 else "")
        col = f"{c.params.get('precision', '?')} / {c.params.get('compile', '?')}"
        rows.setdefault(row)
        cols.setdefault(col)
        cells[(row, col)] = c.verdict + (" (unverified)" if unverified_reason(c) else "")
    return list(rows), list(cols), cells


# The order of the failures list; an unverified pass last: it passed, on one oracle's word.
_NOT_PLAIN = (*FAILING_VERDICTS, "xfail", "not_run", "skip", "pass")


def _not_plain(results: Results) -> list:
    """(case, reason) of each case that is not a plain pass, an unverified pass with why it is one."""
    out = []
    for c in results.cases:
        if c.verdict == "pass":
            why = unverified_reason(c)
            if why:
                out.append((c, f"unverified: {why}"))
        elif c.verdict in _NOT_PLAIN:
            out.append((c, c.reason))
    return out


def failing_cases(results: Results, repro: dict[str, str] | None = None) -> list[FailingCase]:
    """Cases that are not a plain pass: failures, errors, xpasses, known failures, skipped and unfinished
    cases, and unverified passes (never shown as plain passes), each with its reason."""
    repro = repro or {}
    order = {v: i for i, v in enumerate(_NOT_PLAIN)}
    cases = sorted(_not_plain(results), key=lambda cr: order[cr[0].verdict])
    return [
        FailingCase(c.case_id, c.verdict, " ".join(clipped(reason).split()), repro.get(c.case_id))
        for c, reason in cases[:MAX_TABLE_ROWS]
    ]


def failing_not_listed(results: Results) -> str:
    """The line that says how many failing cases failing_cases left out, and where they are ('' for none)."""
    total = len(_not_plain(results))
    if total <= MAX_TABLE_ROWS:
        return ""
    return f"... and {total - MAX_TABLE_ROWS} more of {total} not listed here; {TABLES_NOTE}."


def environment_lines(results: Results) -> list[str]:
    env = results.environment
    libs = ", ".join(f"{k} {v}" for k, v in env.libraries.items() if v)
    device = env.device + (f" ({env.gpu})" if env.gpu else "")
    return [
        f"Device: {device}; CPU: {env.cpu} x{env.cpu_count}; {env.platform}",
        f"Python {env.python}; {libs}",
        f"peft-bench {env.suite_version} at commit {env.git_commit or 'unknown'}; host {env.hostname}",
        f"Run created {results.created_at}"
        + (f", shard {results.shard}" if results.shard else "")
        + (" (interrupted: the run did not finish)" if results.interrupted else ""),
    ]


def timing_policy_line(results: Results) -> str:
    policies = {c.timing_policy for c in results.cases if c.timing_policy is not None}
    if not policies:
        return "Timing policy: not recorded."
    parts = sorted(
        f"max_rounds {p.max_rounds}; min_rounds {p.min_rounds}; min_time_s {p.min_time_s}; warmup {p.warmup}"
        for p in policies
    )
    return "Timing policy (warm-up calls, then rounds until both minimums): " + " | ".join(parts)
