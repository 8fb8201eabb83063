"""summary.md beside the results, and the terminal lines a run prints as it goes."""

from __future__ import annotations

from pathlib import Path

from bench.results.atomic import write_text
from bench.results.brief import clipped, md_text
from bench.results.failures import unverified_reason
from bench.results.records import CaseResult, Results

SUMMARY_FILE = "summary.md"


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def case_line(case: CaseResult) -> str:
    wall = _wall(case)
    line = f"{case.verdict.upper():7} {case.case_id}  ({wall})"
    return line + (f"\n        {case.reason}" if case.reason else "")


def verdict_counts(results: Results) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in results.cases:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return counts


def unverified_passes(results: Results) -> int:
    """Passes with a step no pair of oracles verified (StepRecord.unverified): never counted as plain passes."""
    return sum(1 for c in results.cases if unverified_reason(c) is not None)


def counts_line(results: Results) -> str:
    return counts_text(verdict_counts(results), unverified_passes(results))


def count_badges(results: Results) -> list[tuple[str, str, int]]:
    """(verdict, its text, unverified passes) per verdict present, in counts_text's order: "2 pass (1
    unverified)" as the counts line says it, for the HTML badges and the site."""
    counts, unverified = verdict_counts(results), unverified_passes(results)
    return [
        (v, counts_text({v: counts[v]}, unverified if v == "pass" else 0), unverified if v == "pass" else 0)
        for v in _ordered(counts)
    ]


VERDICT_ORDER = ("pass", "fail", "xfail", "xpass", "error", "skip", "not_run")


def _ordered(counts: dict[str, int]) -> list[str]:
    return [v for v in VERDICT_ORDER if counts.get(v)]


def counts_text(counts: dict[str, int], unverified: int) -> str:
    """'3 pass (1 unverified), 1 fail': verdict counts, and how many of the passes are unverified."""
    return ", ".join(
        f"{counts[v]} {v}" + (f" ({unverified} unverified)" if v == "pass" and unverified else "")
        for v in _ordered(counts)
    )


def summary_markdown(results: Results, head: list[str] | tuple[str, ...] = ()) -> str:
    """`head`: Markdown lines put right after the counts (the report's answers, bench.report.answers_view)."""
    cases = results.cases
    return summary_text(results, counts_line(results), head, map(table_row, cases), map(steps_lines, cases))


def summary_text(results: Results, counts: str, head, rows, steps) -> str:
    """summary.md from its parts: `results` for the file-level fields (its cases are not read), the counts
    line, `head`, the table's rows (table_row) and each case's lines under "## Steps" (steps_lines), each
    consumed once (a merge renders them as it streams the cases: bench.results.streaming)."""
    env = results.environment
    libs = ", ".join(f"{k} {v}" for k, v in env.libraries.items() if v)
    out = [
        "# peft-bench summary",
        "",
        f"{counts}. Created {md_text(results.created_at)}"
        + (" (interrupted: the run did not finish)" if results.interrupted else "")
        + ".",
        "",
        *head,
        md_text(
            f"Environment: {env.device}"
            + (f" ({env.gpu})" if env.gpu else "")
            + f", {env.cpu} x{env.cpu_count}, "
            f"Python {env.python}; {libs}; peft-bench {env.suite_version} at {env.git_commit or 'unknown commit'}."
        ),
        "",
        "| case | verdict | recompiles | wall s | reason |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "## Steps",
    ]
    for lines in steps:
        out += lines
    return "\n".join(out) + "\n"


def table_row(c: CaseResult) -> str:
    # One line, clipped, its markup shown as written: a reason is text from a library's exception.
    reason = md_text(clipped(c.reason)).replace("|", "\\|")
    return (
        f"| `{c.case_id}` | {c.verdict} | {'-' if c.total_recompiles is None else c.total_recompiles} | "
        f"{_wall(c)} | {reason} |"
    )


def steps_lines(c: CaseResult) -> list[str]:
    """A case's section under "## Steps" ([] for a case without steps)."""
    if not c.steps:
        return []
    out = [
        "",
        f"### `{c.case_id}`: {c.verdict}",
        "",
        "| # | op | status | op ms | first call ms | median ms (n) | recompiles | max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in c.steps:
        med = f"{s.timing.median_ms:.3g} ({s.timing.n})" if s.timing else "-"
        rec = "-" if s.compile is None else str(s.compile.recompiles)
        diff = "-" if not s.output or s.output.max_abs_diff is None else f"{s.output.max_abs_diff:.2g}"
        if s.output and s.output.kind == "tokens":
            diff = "tokens equal" if s.output.tokens_equal else f"{s.output.mismatched_tokens} tokens differ"
        out.append(
            f"| {s.index} | {s.op} | {s.status} | {_fmt_ms(s.op_time_ms)} | {_fmt_ms(s.first_call_ms)} | "
            f"{med} | {rec} | {diff} |"
        )
    return out


def write_summary(out_dir: Path, results: Results, head: list[str] | tuple[str, ...] = ()) -> Path:
    path = Path(out_dir) / SUMMARY_FILE
    write_text(path, summary_markdown(results, head))
    return path


def _wall(case) -> str:
    """The case's own time; for a worker that died before reporting it, the parent's time of its process."""
    if case.wall_s is not None:
        return f"{case.wall_s:.1f}s"
    process_s = case.worker.wall_s
    return f"{process_s:.1f}s (process)" if process_s is not None else "-"
