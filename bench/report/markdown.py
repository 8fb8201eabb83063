"""The Markdown report: for READMEs, GitHub step summaries and blog posts. Tables only (no images), so it
renders anywhere; every figure carries its n and spread, and the environment heads the report."""

from __future__ import annotations

import os
from pathlib import Path

from bench.report import answers_view, contents, data, failures_view, sections
from bench.report.repro import Repro
from bench.results.brief import code_span, md_text
from bench.results.records import Results
from bench.results.summary import counts_line


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table_md(t: sections.ReportTable, *, code_first: bool = True) -> list[str]:
    """Cells hold text from the results (scenario names, reasons): each on one line, its markup shown as
    written (md_text), the first column a code span where `code_first`."""

    def cell(c: str, first: bool) -> str:
        return _cell(code_span(c) if first and code_first and c and c != "-" else md_text(c))

    out = ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    out += ["| " + " | ".join(cell(c, i == 0) for i, c in enumerate(r)) + " |" for r in t.rows]
    if t.collapsed:
        return [f"<details><summary>{md_text(t.caption or 'details')}</summary>", "", *out, "", "</details>"]
    return out


def section_md(s: sections.Section) -> list[str]:
    out = [f"## {s.title}", ""]
    if s.lead:
        out += [*(f"- **{md_text(line)}**" for line in s.lead), ""]
    if s.intro:
        out += [s.intro, ""]
    notes = [f"> {md_text(n)}" for n in s.notes]
    if not s.tables:
        return [*out, s.empty, "", *notes, *([""] if notes else [])]
    for t in s.tables:
        if t.caption and not t.collapsed:
            out += [f"**{md_text(t.caption)}**", ""]
        out += [*table_md(t, code_first=s.key not in ("verdicts", "answers")), ""]
    return [*out, *notes, *([""] if notes else [])]


def log_link(log: str, results_dir: Path | None, out_dir: Path | None) -> str:
    """The log's path relative to where the report is written (the results folder unless --out moved it)."""
    if results_dir is None:
        return log
    target = Path(results_dir) / log
    return os.path.relpath(target, out_dir) if out_dir is not None else str(target)


def failures_md(
    results: Results,
    repros: dict[str, Repro],
    *,
    results_dir: Path | None = None,
    out_dir: Path | None = None,
) -> list[str]:
    out = ["## Failures and known failures", ""]
    items = failures_view.items(results, results_dir)
    for f in items:
        line = f"- {code_span(f.case_id)} **{failures_view.label(f)}**: {md_text(f.reason)}"
        if f.known_failure:
            line += f" Known failure: {md_text(f.known_failure)}."
        r = repros.get(f.case_id)
        if r is not None:
            line += f" Reproduction: [`{r.path}`]({r.path})." if r.path else f" ({r.note})"
        if f.log:
            link = log_link(f.log, results_dir, out_dir)
            line += f" Log: [`{f.log}`]({link})."
        out.append(line)
        out += [f"  > {code_span(x)}" for x in f.log_lines]
        if f.log_note:
            out.append(f"  > ({md_text(f.log_note)})")
    if more := data.failing_not_listed(results):  # bounded (bench.report.data.MAX_TABLE_ROWS)
        out.append(more)
    return [*out, ""] if items else [*out, "Every case passed.", ""]


def render(
    results: Results,
    repros: dict[str, Repro] | None = None,
    *,
    title: str = "peft-bench report",
    results_dir: Path | None = None,
    out_dir: Path | None = None,
) -> str:
    """`results_dir`: the folder holding results.json and cases/ (for the failures' log lines and links);
    `out_dir`: where the report is written (links are relative to it)."""
    repros = repros or {}
    out = [f"# {title}", "", f"**{counts_line(results)}**", ""]
    out += section_md(answers_view.section(results))
    out += ["## Environment", ""]
    out += [f"- {md_text(line)}" for line in data.environment_lines(results)]
    out += [f"- {data.timing_policy_line(results)}", ""]
    out += section_md(sections.verdicts(results))
    out += failures_md(results, repros, results_dir=results_dir, out_dir=out_dir or results_dir)
    for s in contents.all_sections(results):
        out += section_md(s)
    return "\n".join(out).rstrip("\n") + "\n"
