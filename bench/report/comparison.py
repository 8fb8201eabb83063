"""A Comparison (and a gate's decision) as terminal text or as Markdown (for $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from bench.judge.compare import Comparison
from bench.judge.findings import Finding, fmt_value
from bench.judge.gate import GateResult
from bench.results.brief import clipped

# Statuses shown by default: what changed. `--all` shows every finding.
CHANGED = ("regression", "still_failing", "missing", "coverage_lost", "improvement", "noise", "new")
_ORDER = {
    s: i
    for i, s in enumerate(
        (
            "regression",
            "still_failing",
            "missing",
            "coverage_lost",
            "improvement",
            "noise",
            "new",
            "not_compared",
            "unchanged",
        )
    )
}


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (_ORDER.get(f.status, 99), f.case_id, f.step or 0))


# Rows a comparison lists (the worst first) before it says how many more there are: a run of 20,000 cases
# can have as many findings, and $GITHUB_STEP_SUMMARY takes at most 1 MiB.
MAX_ROWS = 200


def _shown(c: Comparison, show_all: bool) -> list[Finding]:
    return _sorted([f for f in c.findings if show_all or f.status in CHANGED])


def _more(total: int) -> str:
    return (
        f"... and {total - MAX_ROWS} more finding(s) not listed (`peft-bench compare --all` prints every one)"
    )


def counts(c: Comparison) -> str:
    tally: dict[str, int] = {}
    for f in c.findings:
        tally[f.status] = tally.get(f.status, 0) + 1
    return ", ".join(f"{tally[s]} {s}" for s in _ORDER if tally.get(s))


def _label(f: Finding) -> str:
    return f.status + ("" if f.gated or f.status in ("unchanged", "not_compared") else " (not gated)")


def comparison_text(c: Comparison, *, show_all: bool = False) -> str:
    lines = [
        f"baseline: {c.baseline_label}",
        f"current:  {c.current_label}",
        f"speed compared as {c.timing_reason}",
        f"findings: {counts(c)}",
    ]
    shown = _shown(c, show_all)
    if shown:
        lines.append("")
    for f in shown if show_all else shown[:MAX_ROWS]:
        lines.append(
            f"{_label(f):24} {f.where}  {f.metric}: {fmt_value(f.baseline, f.unit)} -> "
            f"{fmt_value(f.current, f.unit)}  [{clipped(f.message)}]"
        )
    if not show_all and len(shown) > MAX_ROWS:
        lines.append(_more(len(shown)))
    if not show_all:
        lines.append("")
        lines.append("(unchanged and not compared findings hidden; --all shows them)")
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def comparison_markdown(c: Comparison, *, show_all: bool = False, gate: GateResult | None = None) -> str:
    out = []
    if gate is not None:
        verdict = "passed" if gate.passed else f"FAILED ({len(gate.failures)} failure(s))"
        out += [f"## peft-bench gate: {verdict}", ""]
        for m in gate.messages[:MAX_ROWS]:
            out.append(f"- {_md_cell(clipped(m))}")
        if len(gate.messages) > MAX_ROWS:
            out.append(f"- ... and {len(gate.messages) - MAX_ROWS} more failure(s), listed in the findings")
        if gate.failures:
            out += ["", _md_cell(gate.advice).replace(gate.update_command, f"`{gate.update_command}`")]
        if gate.missing_allowed:
            out += [
                "",
                f"{gate.missing_allowed} baseline case(s) absent from this run were allowed (--allow-missing).",
            ]
        if gate.coverage_allowed:
            out += [
                "",
                f"{gate.coverage_allowed} case(s) that check less than in the baseline were allowed "
                "(--allow-coverage-loss).",
            ]
        out.append("")
    else:
        out += ["## peft-bench compare", ""]
    out += [
        f"- baseline: `{c.baseline_label}`",
        f"- current: `{c.current_label}`",
        f"- speed compared as {c.timing_reason}",
        f"- findings: {counts(c)}",
        "",
    ]
    shown = _shown(c, show_all)
    if shown:
        out += [
            "| status | case | step | metric | baseline | current | change | detail |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f in shown[:MAX_ROWS]:
            step = "" if f.step is None else f"{f.step} ({f.op})"
            change = "" if f.change_rel is None else f"{f.change_rel:+.0%}"
            out.append(
                f"| {_label(f)} | `{_md_cell(f.case_id)}` | {step} | {f.metric} | {fmt_value(f.baseline, f.unit)} | "
                f"{fmt_value(f.current, f.unit)} | {change} | {_md_cell(clipped(f.message))} |"
            )
        if len(shown) > MAX_ROWS:
            out += ["", _more(len(shown))]
    else:
        out.append("Nothing changed.")
    return "\n".join(out) + "\n"
