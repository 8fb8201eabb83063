"""The site's pages as HTML text: the runs (index.html), the verdicts across runs (compat.html) and the
trends (trends.html). Standalone pages: inline CSS and SVG, relative links only, no script, nothing fetched,
so the site works from file:// as well as from a web server.
"""

from __future__ import annotations

import html

from bench import VERDICT_RULES_VERSION
from bench.report.site import history, svg
from bench.report.site.history import Column
from bench.results.summary import counts_line

PAGES = {"index.html": "Runs", "compat.html": "Verdicts across runs", "trends.html": "Trends"}
RUNS_DIR = "runs"  # runs/<run id>/report.html and results.json

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 1320px;
       padding: 0 1.5rem; color: #1d1d1f; line-height: 1.45; }
nav a { margin-right: 1.2rem; font-weight: 600; } nav { border-bottom: 1px solid #ddd; padding-bottom: .5rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; } h3 { margin-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .82rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.v-pass { background: #dafbe1; } .v-xfail { background: #fff8c5; } .v-fail, .v-error, .v-xpass { background: #ffebe9; }
.v-skip, .v-not_run { background: #eaeef2; }
.stale { background: #fff1e5; } .intro { color: #57606a; font-size: .9rem; max-width: 980px; }
.note { border-left: 3px solid #d4a72c; padding-left: .6rem; font-size: .9rem; max-width: 980px; }
td.changes { font-size: .78rem; max-width: 420px; } svg { display: block; margin: .3rem 0; }
td:first-child { white-space: nowrap; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def page(title: str, body: list[str]) -> str:
    nav = "".join(f'<a href="{name}">{_e(label)}</a>' for name, label in PAGES.items())
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<nav>{nav}</nav>\n<h1>{_e(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def report_href(col: Column) -> str:
    return f"{RUNS_DIR}/{col.run.run_id}/report.html"


def results_href(col: Column) -> str:
    return f"{RUNS_DIR}/{col.run.run_id}/results.json"


def rules_text(col: Column) -> str:
    if col.stale:
        return f"{col.rules} (now {VERDICT_RULES_VERSION}): judged under older rules"
    return str(col.rules)


def _stale_note(cols: list[Column]) -> list[str]:
    stale = [f"#{i + 1}" for i, c in enumerate(cols) if c.stale]
    if not stale:
        return []
    return [
        f'<p class="note">Runs {", ".join(stale)} were judged under older verdict rules than this version '
        f"of peft-bench ({VERDICT_RULES_VERSION}; docs/verdicts.md): their verdicts mean what those rules "
        "said, and a verdict that differs across a change of rules is listed as not comparable. Rerun them "
        "to judge them again.</p>"
    ]


def index_page(cols: list[Column], *, with_hostname: bool = False) -> str:
    head = ["#", "run", "started (UTC)", "libraries", "torch", "machine", "verdicts", "verdict rules"]
    head += ["changed since the run before", "files"]
    body_rows = []
    for i, col in enumerate(cols):
        r = col.run.results
        counts = counts_line(r)  # "2 pass (1 unverified)": an unverified pass is never shown as a plain one
        cells = [
            f"<td>{i + 1}</td>",
            f'<td><a href="{_e(report_href(col))}">{_e(col.run.run_id)}</a></td>',
            f"<td>{_e(col.run.started_at.strftime('%Y-%m-%d %H:%M:%S'))}</td>",
            f"<td>{_e(col.label)}</td>",
            f"<td>{_e(r.environment.libraries.get('torch') or '-')}</td>",
            f"<td>{_e(history.host_facts(r.environment, with_hostname=with_hostname))}</td>",
            f"<td>{_e(counts)}</td>",
            f'<td class="{"stale" if col.stale else ""}">{_e(rules_text(col))}</td>',
            f'<td class="changes">{_e("; ".join(col.changes) or ("-" if i else "first run"))}</td>',
            f'<td><a href="{_e(results_href(col))}">results.json</a></td>',
        ]
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    first, last = cols[0].run.started_at, cols[-1].run.started_at
    body = [
        f'<p class="intro">{len(cols)} run(s) of peft-bench from {first:%Y-%m-%d} to {last:%Y-%m-%d}, in the '
        "order they started. Each run links to its own report; the verdicts of every case across the runs "
        'are on <a href="compat.html">Verdicts across runs</a>, their figures on '
        '<a href="trends.html">Trends</a>.</p>',
        *_stale_note(cols),
        _table(head, body_rows, "runs"),
    ]
    return page("peft-bench results", body)


def _table(head: list[str], body_rows: list[str], ident: str) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table id="{ident}"><thead><tr>{th}</tr></thead><tbody>{"".join(body_rows)}</tbody></table>'


def _column_head(i: int, col: Column) -> str:
    stale = f"<br>rules {col.rules} (now {VERDICT_RULES_VERSION})" if col.stale else ""
    return (
        f'<th class="{"stale" if col.stale else ""}"><a href="{_e(report_href(col))}">#{i + 1}</a> '
        f"{_e(col.label)}<br>{col.run.started_at:%Y-%m-%d}{stale}</th>"
    )


def compat_page(cols: list[Column]) -> str:
    matrix = history.verdict_matrix(cols)
    head = "<th>case</th>" + "".join(_column_head(i, c) for i, c in enumerate(cols))
    body_rows = []
    for cid, verdicts in matrix.items():
        cells = "".join(
            f'<td class="v-{_e(v)}">{_e(v)}</td>' if v else '<td class="absent">-</td>' for v in verdicts
        )
        body_rows.append(f'<tr data-case="{_e(cid)}"><td><code>{_e(cid)}</code></td>{cells}</tr>')
    matrix_html = (
        f'<table id="matrix"><thead><tr>{head}</tr></thead><tbody>{"".join(body_rows)}</tbody></table>'
    )
    changes = history.verdict_changes(cols)
    index = {id(c): i for i, c in enumerate(cols)}
    change_rows = []
    for ch in changes:
        b, a = index[id(ch.before)], index[id(ch.after)]
        judged = (
            "yes"
            if ch.comparable
            else f"no: verdict rules {ch.before.rules} -> {ch.after.rules}, the verdicts mean different things"
        )
        what = "; ".join(history.environment_changes(ch.before.run.results, ch.after.run.results))
        change_rows.append(
            f'<tr data-case="{_e(ch.case_id)}"><td><code>{_e(ch.case_id)}</code></td>'
            f"<td>#{b + 1} {_e(ch.before.label)}</td><td>#{a + 1} {_e(ch.after.label)}</td>"
            f'<td class="v-{_e(ch.was)}">{_e(ch.was)}</td><td class="v-{_e(ch.now)}">{_e(ch.now)}</td>'
            f'<td class="{"" if ch.comparable else "stale"}">{_e(judged)}</td>'
            f'<td class="changes">{_e(what or "-")}</td></tr>'
        )
    history_html = (
        _table(
            ["case", "before", "after", "was", "now", "comparable", "what changed"], change_rows, "changes"
        )
        if change_rows
        else "<p>No case's verdict changed between the runs that had it.</p>"
    )
    body = [
        '<p class="intro">One row per case, one column per run (its library pair and date; the number links '
        "to its report). A dash: that run did not have the case. Below, every change of a case's verdict "
        "against the latest earlier run that had it, with what changed between the two runs.</p>",
        *_stale_note(cols),
        matrix_html,
        "<h2 id='history'>Verdict history</h2>",
        history_html,
    ]
    return page("Verdicts across runs", body)


def _scale(unit: str) -> tuple[float, str]:
    return (2.0**20, "MiB") if unit == "bytes" else (1.0, unit)


# Cases a trends page draws at most: each is a chart and a table per metric (about 9 KB a case), so a page of
# every case of a 20,000-case run was 177 MB, more than a browser opens.
TREND_CASES = 200


def trends_page(cols: list[Column]) -> str:
    marks = [
        svg.Mark(i, "; ".join(c.changes), rules=c.rules != cols[i - 1].rules)
        for i, c in enumerate(cols)
        if i and c.changes
    ]
    labels = [f"#{i + 1}" for i in range(len(cols))]
    body = [
        '<p class="intro">Each case\'s figures across the runs (x: the runs in start order, as numbered on '
        '<a href="index.html">Runs</a>). A grey dashed line marks a run whose environment differs from the '
        "run before (hover it, or see the table): timings across it compare different machines or library "
        "versions. A red dotted line marks a change of verdict rules.</p>",
        *_stale_note(cols),
    ]
    every = history.trends(cols)
    drawn = history.drawn_cases(every, TREND_CASES)
    cases = len({t.case_id for t in every})
    if cases > len(drawn):
        body.append(
            f'<p class="note">{cases:,} cases: the {len(drawn):,} whose figures moved most between their first '
            "and last run are drawn here, the most first. Every case's figures are in each run's results.json "
            "(links on Runs) and in the dataset `peft-bench publish` writes.</p>"
        )
    # Every case drawn: in case order, as before; some left out: the most moved first, as the note says.
    rank = {cid: i for i, cid in enumerate(drawn if cases > len(drawn) else sorted(drawn))}
    current = None
    for t in sorted((t for t in every if t.case_id in rank), key=lambda t: rank[t.case_id]):
        if t.case_id != current:
            current = t.case_id
            body.append(f'<h2 id="{_e(_anchor(t.case_id))}"><code>{_e(t.case_id)}</code></h2>')
        scale, unit = _scale(t.unit)
        title = f"{t.metric} ({unit})"
        body.append(f"<h3>{_e(title)}</h3>")
        body.append(svg.line_chart(f"{t.case_id}: {title}", labels, t.series, marks, scale=scale))
        head = ["series", *labels]
        rows = [
            f'<tr data-series="{_e(name)}"><td>{_e(name)}</td>'
            + "".join(f'<td class="num">{"-" if v is None else _e(svg.fmt(v / scale))}</td>' for v in values)
            + "</tr>"
            for name, values in t.series.items()
        ]
        body.append(_table(head, rows, f"t-{_anchor(t.case_id)}-{t.metric}"))
    return page("Trends", body)


def _anchor(case_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_id)
