"""The HTML report: one self-contained file (inline CSS, figures as base64 PNG data URIs, no scripts, no
external links), so it can be mailed, attached to a CI run or opened from disk."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from bench.report import answers_view, contents, data, drawing, failures_view, markdown, plots, sections
from bench.report.flags import WRONG
from bench.report.repro import Repro
from bench.results.records import Results
from bench.results.summary import count_badges

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1320px;
       padding: 0 1.5rem; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
.env { background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 6px; padding: .6rem 1rem; font-size: .9rem; }
.env div { margin: .15rem 0; }
.counts span { display: inline-block; margin: .6rem .4rem 0 0; padding: .15rem .6rem; border-radius: 1rem;
               font-weight: 600; font-size: .9rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .82rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.id { white-space: nowrap; }
td.wrap { max-width: 520px; word-break: break-word; } td:first-child { white-space: nowrap; }
td.way { white-space: nowrap; }
.v-pass { background: #dafbe1; } .v-xfail { background: #fff8c5; } .v-fail, .v-error, .v-xpass { background: #ffebe9; }
.v-pass.v-unverified { background: #fff8c5; }
.v-skip, .v-not_run { background: #eaeef2; }
.intro { color: #57606a; font-size: .9rem; max-width: 980px; }
.note { border-left: 3px solid #d4a72c; padding-left: .6rem; font-size: .9rem; max-width: 980px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { margin: .6rem 0 1rem; } figcaption { color: #57606a; font-size: .85rem; }
.scroll { overflow-x: auto; max-width: 100%; }
tr.wrong td { background: #ffebe9; } td.flag { color: #a40e26; font-weight: 700; min-width: 14rem; }
ul.decide { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .5rem 1rem .5rem 2rem; }
ul.decide li { margin: .25rem 0; }
.k-wrong { background: #ffcecb; } .k-raised { background: #fff8c5; }
pre.log { max-height: 14rem; white-space: pre-wrap; word-break: break-word; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .75rem; max-height: 28rem; }
li { margin: .35rem 0; } code { font-size: .95em; }
"""

_NUMERIC = {"n", "steps", "recompiles", "frame compiles", "graph breaks", "grad", "optimizer state", "saved"}
_NUMERIC |= {
    "grad + optimizer full",
    "grad + optimizer LoRA",
    "full / LoRA",
    "RSS full / LoRA",
    "call / floor",
}


def _e(text: object) -> str:
    return html.escape(str(text))


def _img(plot: plots.Plot | None, title: str) -> str:
    """The figure, with what it shows in its alt text (title, axes, legend) and its title under it."""
    if plot is None:
        return ""
    src = base64.b64encode(plot.png).decode()
    caption = "; ".join(plot.titles)
    return (
        f'<figure><img alt="{_e(title)}. {_e(plot.alt)}" src="data:image/png;base64,{src}" '
        f'width="{plot.width_px}" height="{plot.height_px}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _is_num(header: str) -> bool:
    return header in _NUMERIC or header.endswith((" ms", " MiB", " KiB", " s")) or header == "x reload"


def table_html(t: sections.ReportTable, *, verdict_cells: bool = False) -> str:
    """A table inside its own horizontal scroller (a wide table never widens the page); a row whose cells carry
    the wrong-output flag is highlighted, the flag's cell in bold red."""
    head = "".join(f"<th>{_e(h)}</th>" for h in t.header)
    body = []
    for row in t.rows:
        cells = []
        flagged = False
        for h, v in zip(t.header, row, strict=True):
            cls = []
            if verdict_cells and h != "scenario" and v:
                # "pass (unverified)": an unverified pass, never coloured as a plain one
                cls += [f"v-{v.split()[0]}", *(["v-unverified"] if "unverified" in v else [])]
            if _is_num(h):
                cls.append("num")
            if h in ("reason", "note", "output", "wrong / checked"):
                cls.append("wrap")
            if h.endswith("case"):  # case ids: one line each, as in the first column
                cls.append("id")
            if h in ("way", "strategy", "compile"):
                cls.append("way")
            if WRONG in v:
                cls.append("flag")
                flagged = True
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{_e(v)}</td>")
        body.append(("<tr class='wrong'>" if flagged else "<tr>") + "".join(cells) + "</tr>")
    out = f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    if t.collapsed:
        return f"<details><summary>{_e(t.caption or 'details')}</summary>{out}</details>"
    return out


def _section(s: sections.Section, figure: plots.Plot | None) -> str:
    parts = [f'<h2 id="{s.key}">{_e(s.title)}</h2>']
    if s.lead:
        items = [x.split(": ", 1) if ": " in x else ["", x] for x in s.lead]
        parts.append(
            "<ul class='decide'>" + "".join(f"<li><b>{_e(h)}</b>: {_e(b)}</li>" for h, b in items) + "</ul>"
        )
    if s.intro:
        parts.append(f'<p class="intro">{_e(s.intro)}</p>')
    notes = [f'<p class="note">{_e(n)}</p>' for n in s.notes]
    if not s.tables:
        parts.append(f"<p>{_e(s.empty)}</p>")
        return f"<section class='s-{s.key}'>" + "\n".join([*parts, *notes]) + "</section>"
    tables = []
    for t in s.tables:
        if t.caption and not t.collapsed:
            tables.append(f"<h3>{_e(t.caption)}</h3>")
        tables.append(table_html(t, verdict_cells=s.key == "verdicts"))
    # The answers lead with their table, then the picture; the other sections with their picture.
    body = [*tables, _img(figure, s.title)] if s.key == "answers" else [_img(figure, s.title), *tables]
    return f"<section class='s-{s.key}'>" + "\n".join(p for p in [*parts, *body, *notes] if p) + "</section>"


def _failures(
    results: Results, repros: dict[str, Repro], out_dir: Path | None, results_dir: Path | None
) -> str:
    found = failures_view.items(results, results_dir)
    if not found:
        return "<h2 id='failures'>Failures and known failures</h2><p>Every case passed.</p>"
    items = []
    for f in found:
        kind = " k-wrong" if f.kind.startswith("wrong") else " k-raised" if f.kind == "raised" else ""
        item = (
            f'<li><code>{_e(f.case_id)}</code> <b class="v-{_e(f.verdict)}{kind}">{_e(failures_view.label(f))}</b>: '
            f"{_e(f.reason)}"
        )
        if f.known_failure:
            item += f"<br><i>Known failure:</i> {_e(f.known_failure)}"
        if f.log_lines:
            item += f"<pre class='log'>{_e(chr(10).join(f.log_lines))}</pre>"
        elif f.log_note:
            item += f" <i>({_e(f.log_note)})</i>"
        if f.log:
            link = markdown.log_link(f.log, results_dir, out_dir)
            item += f' <a href="{_e(link)}">case log</a>'
        r = repros.get(f.case_id)
        if r is not None and r.path:
            item += f' <a href="{_e(r.path)}">reproduction script</a> (<code>python {_e(r.path)}</code>)'
            script = (out_dir / r.path) if out_dir else None
            if script is not None and script.is_file():
                text = script.read_text(encoding="utf-8")
                item += f"<details><summary>the script</summary><pre>{_e(text)}</pre></details>"
        elif r is not None:
            item += f" <i>({_e(r.note)})</i>"
        items.append(item + "</li>")
    more = data.failing_not_listed(results)  # bounded (bench.report.data.MAX_TABLE_ROWS)
    more_html = f"<p>{_e(more)}</p>" if more else ""
    return "<h2 id='failures'>Failures and known failures</h2><ul>" + "".join(items) + "</ul>" + more_html


def render(
    results: Results,
    repros: dict[str, Repro] | None = None,
    *,
    out_dir: Path | None = None,
    results_dir: Path | None = None,
    title: str = "peft-bench report",
    figures: dict[str, plots.Plot | None] | None = None,
) -> str:
    """`out_dir` is where the report is written: reproduction scripts and case logs are linked relative to it;
    `results_dir` holds results.json and cases/ (the failures' log lines), by default `out_dir`. `figures`:
    the plots of drawing.planned(results), drawn by the caller (bench.report.build draws them beside the
    text); drawn here when not given."""
    repros = repros or {}
    results_dir = results_dir if results_dir is not None else out_dir
    badges = "".join(
        f'<span class="v-{_e(v)}{" v-unverified" if v == "pass" and unverified else ""}">{_e(text)}</span>'
        for v, text, unverified in count_badges(results)
    )
    env = "".join(
        f"<div>{_e(line)}</div>"
        for line in [*data.environment_lines(results), data.timing_policy_line(results)]
    )
    no_figures = plots.unavailable_reason()
    if no_figures:
        figures = {}
    elif figures is None:
        figures = drawing.draw(drawing.planned(results))
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<div class="counts">{badges}</div>',
        f'<p class="intro">No figures: {_e(no_figures)}.</p>' if no_figures else "",
        _section(answers_view.section(results), figures.get("answers")),
        '<h2 id="environment">Environment</h2>',
        f'<div class="env">{env}</div>',
        _section(sections.verdicts(results), None),
        _failures(results, repros, out_dir, results_dir),
        *(_section(s, figures.get(s.key)) for s in contents.all_sections(results)),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
