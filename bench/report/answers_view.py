"""The report's first section, "Which to use": the decision lines and the choices table (bench.report.answers),
as a Section both renderers lay out, and the same lines for summary.md's top."""

from __future__ import annotations

from bench.report import answers, flags
from bench.report.answers import Advice, Choice
from bench.report.bootstrap import MAX_BOOTSTRAP_SAMPLES, ORDER_STATISTICS
from bench.report.memo import per_results
from bench.report.sections import ReportTable, Section
from bench.report.units import MiB, number_text, ratio_text
from bench.results.brief import listing, md_text
from bench.results.failures import failure_line
from bench.results.records import Results

HEADER = (
    "compile",
    "way",
    "output",
    "latency ms [95% CI]",
    "n",
    "tok/s",
    "adapter overhead [95% CI]",
    "switch ms",
    "x copy floor",
    "x reload",
    "recompiles / swap",
    "peak RSS MiB",
    "verdicts",
)


def _ms(v: float | None) -> str:
    return "-" if v is None else number_text(v)


def _interval(iv, unit: str = "") -> str:
    if iv is None:
        return "-"
    return f"{_ms(iv.estimate)}{unit} [{_ms(iv.low)}, {_ms(iv.high)}]"


def _ratio(v: float | None) -> str:
    return ratio_text(v, digits=2)


def _verdicts(c: Choice) -> str:
    counts: dict[str, int] = {}
    for v in c.verdicts:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def output_cell(c: Choice) -> str:
    """The flag, how its cases failed, "not checked", or "matches" with what it rests on: "matches" claims a
    checked output in every case, verified by both oracles unless it says otherwise."""
    n = len(c.cases)
    if c.wrong:
        return c.wrong
    if c.bad_cases:
        kinds = "/".join(c.bad_kinds) or "raised"
        return kinds if c.bad_cases == n else f"{kinds} in {c.bad_cases} of {n} cases"
    if c.unchecked_cases == n:
        return "not checked"
    notes = [f"not checked in {c.unchecked_cases} of {n} cases"] if c.unchecked_cases else []
    if c.unverified_cases:
        notes.append(f"unverified in {c.unverified_cases} of {n} cases: one oracle")
    return "matches" + (f" ({'; '.join(notes)})" if notes else "")


def _calls(c: Choice) -> str:
    if c.latency is not None:
        return str(c.latency.n)
    return f"{c.calls} (too few for an interval)" if c.calls else "0"


def row(c: Choice) -> tuple[str, ...]:
    return (
        c.key.compile,
        c.key.way,
        output_cell(c),
        _interval(c.latency),
        _calls(c),
        "-" if c.tokens_per_s is None else f"{c.tokens_per_s:.3g}",
        _interval(c.overhead, "x") if c.overhead else "no disabled step",
        "-" if c.switch_ms is None else f"{_ms(c.switch_ms)} (n={c.switch_n})",
        _ratio(c.switch_over_floor),
        _ratio(c.switch_over_reload),
        "-" if c.recompiles_per_swap is None else f"{c.recompiles_per_swap:g}",
        "-" if c.rss_peak_bytes is None else f"{c.rss_peak_bytes / MiB:.0f}",
        _verdicts(c),
    )


def _what(c: Choice) -> str:
    return f"{c.key.compile} + {c.key.way}"


def _chosen(c: Choice) -> str:
    """A recommended choice, with what its "matches" rests on where that is less than both oracles."""
    note = (
        f" (unverified in {c.unverified_cases} of {len(c.cases)} cases: one oracle)"
        if c.unverified_cases
        else ""
    )
    return _what(c) + note


def _costs(c: Choice) -> str:
    text = f"{_interval(c.latency, ' ms')}" if c.latency else "no timed call"
    if c.rss_peak_bytes is not None:
        text += f", peak RSS {c.rss_peak_bytes / MiB:.0f} MiB"
    return text


def _switch(c: Choice) -> str:
    text = f"{_chosen(c)}: {_ms(c.switch_ms)} ms per switch"
    if c.switch_over_reload is not None:
        text += f" ({_ratio(c.switch_over_reload)} a reload)"
    if c.bad_cases:
        text += f", but wrong or raising in {', '.join(c.bad_scenarios)}"
    return text


def decision_line(a: Advice) -> str:
    """One line per block: the fastest choice, the cheapest way to switch, what to avoid and why."""
    parts = [
        f"fastest: {_chosen(a.fastest)}, {_costs(a.fastest)}"
        if a.fastest
        else "no choice here is right in every case"
    ]
    if a.tied:
        parts.append("tied within the 95% CI: " + ", ".join(_chosen(t) for t in a.tied))
    if a.switch is not None:
        parts.append("to switch adapters: " + _switch(a.switch))
    if a.avoid:
        parts.append("avoid " + "; ".join(f"{_what(c)} ({output_cell(c)})" for c in a.avoid))
    if a.unchecked:
        parts.append("not checked: " + "; ".join(f"{_what(c)} ({output_cell(c)})" for c in a.unchecked))
    careful = [c for c in a.careful if c is not a.switch]
    if careful:
        parts.append(
            "careful: "
            + "; ".join(f"{_what(c)} is wrong or raises in {', '.join(c.bad_scenarios)}" for c in careful)
        )
    return f"{a.block}: " + "; ".join(parts)


INTRO = (
    "What to pick, per model, precision and workload. Each row pools the run's cases with that compile setting "
    "and way of changing adapters. Latency: median ms per call of the measured steps with the adapter active "
    "(serve: per request, queueing included), 95% percentile-bootstrap interval over the raw calls (each step "
    "resampled within itself); n = calls (serve: requests), under 5 too few for an interval and left out of "
    "'fastest'. Output: 'matches' when every case's output was checked against a fresh reference and matched, "
    "the reference agreeing with the math oracle unless the cell says 'unverified'; 'oracles disagree': the "
    "reference itself is not the math's, so matching it proves nothing. Adapter overhead: adapter active over "
    "adapter disabled, medians of one case's two measured steps. Switch: swap call + first model call after "
    "it, median over the swaps whose output matched (over every swap, flagged, where none did) (n); x copy "
    "floor: the swap call over a plain copy of the adapter's bytes; x reload: against a plain load into the "
    "same (compiled) model of the same run, with its first call (serve: against the reload strategy's cost per "
    "switch); a wrong swap gets none. Peak RSS: median of the cases' peaks. A row with a wrong output is "
    "flagged: its figures are of wrong answers."
)


def _order_statistics_note(rows: list[Choice]) -> tuple[str, ...]:
    """Which rows' latency interval is by order statistics (bench.report.bootstrap), not the bootstrap."""
    big = [c for c in rows if c.latency is not None and c.latency.method == ORDER_STATISTICS]
    if not big:
        return ()
    names = [f"{c.key.block}, {_what(c)} (n={c.latency.n})" for c in big]
    return (
        f"Rows pooling more than {MAX_BOOTSTRAP_SAMPLES:,} calls: their latency interval is the median's "
        "distribution-free 95% interval between two order statistics of the pooled calls (binomial), not the "
        "bootstrap, whose cost grows with calls x resamples: " + listing(names, noun="rows") + ".",
    )


@per_results
def section(results: Results) -> Section:
    rows = answers.choices(results)
    if not rows:
        return Section("answers", "Which to use", "", empty="No timed call, swap or serve step in this run.")
    blocks: dict[str, list[Choice]] = {}
    for c in rows:
        blocks.setdefault(c.key.block, []).append(c)
    return Section(
        "answers",
        "Which to use",
        "",
        tuple(ReportTable(HEADER, tuple(row(c) for c in cs), caption=block) for block, cs in blocks.items()),
        # How to read the tables comes after them: the first screen is for the answers.
        notes=(INTRO, *_order_statistics_note(rows), "Not recorded: " + answers.NOT_RECORDED + "."),
        lead=tuple(decision_line(a) for a in answers.advice(rows)),
    )


def wrong_rows(t: ReportTable) -> set[int]:
    """Row indices of a table whose cells carry the wrong-output flag (for the renderers' highlighting)."""
    return {i for i, r in enumerate(t.rows) if any(flags.WRONG in cell for cell in r)}


def summary_lines(results: Results) -> list[str]:
    """summary.md's top: the decision lines, and each case that is not a plain pass with how it went wrong and
    the scenario's known-failure reason (a silently wrong answer and a refusal read differently)."""
    rows = answers.choices(results)
    out = (
        ["## Which to use", "", *(f"- {md_text(decision_line(a))}" for a in answers.advice(rows)), ""]
        if rows
        else []
    )
    odd = [line for c in results.cases if (line := failure_line(c))]
    if odd:
        out += ["## Not a plain pass", "", *odd, ""]
    return out
