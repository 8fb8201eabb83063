"""The Markdown report: for READMEs, GitHub step summaries and blog posts. Tables only (no images), so it
renders anywhere; every figure carries its n and spread, and the environment heads the report."""

from __future__ import annotations

from bench.report import contents, data, sections
from bench.report.repro import Repro
from bench.results.records import Results
from bench.results.summary import counts_line


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_md(t: sections.ReportTable, *, code_first: bool = True) -> list[str]:
    def first(c: str) -> str:
        return f"`{c}`" if code_first and c and c != "-" else c

    out = ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    out += [
        "| " + " | ".join(_cell(first(r[0]) if i == 0 else c) for i, c in enumerate(r)) + " |" for r in t.rows
    ]
    if t.collapsed:
        return [f"<details><summary>{t.caption or 'details'}</summary>", "", *out, "", "</details>"]
    return out


def section_md(s: sections.Section) -> list[str]:
    out = [f"## {s.title}", ""]
    if s.intro:
        out += [s.intro, ""]
    notes = [f"> {n}" for n in s.notes]
    if not s.tables:
        return [*out, s.empty, "", *notes, *([""] if notes else [])]
    for t in s.tables:
        if t.caption and not t.collapsed:
            out += [f"**{t.caption}**", ""]
        out += [*table_md(t, code_first=s.key != "verdicts"), ""]
    return [*out, *notes, *([""] if notes else [])]


def failures_md(results: Results, repros: dict[str, Repro]) -> list[str]:
    out = ["## Failures and known failures", ""]
    cases = data.failing_cases(results)
    for f in cases:
        line = f"- `{f.case_id}` **{f.verdict}**: {f.reason or '(no reason recorded)'}"
        r = repros.get(f.case_id)
        if r is not None:
            line += f" Reproduction: [`{r.path}`]({r.path})." if r.path else f" ({r.note})"
        out.append(line)
    if more := data.failing_not_listed(results):  # bounded (bench.report.data.MAX_TABLE_ROWS)
        out.append(more)
    return [*out, ""] if cases else [*out, "Every case passed.", ""]


def render(
    results: Results, repros: dict[str, Repro] | None = None, *, title: str = "peft-bench report"
) -> str:
    repros = repros or {}
    out = [f"# {title}", ""]
    out += [f"- {line}" for line in data.environment_lines(results)]
    out += [f"- {data.timing_policy_line(results)}", "", f"**{counts_line(results)}**", ""]
    out += section_md(sections.verdicts(results))
    out += failures_md(results, repros)
    for s in contents.all_sections(results):
        out += section_md(s)
    return "\n".join(out).rstrip("\n") + "\n"
