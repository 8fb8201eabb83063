"""`peft-bench site`: one static site over real runs (the four shipped compat combinations, two transformers
versions, and the CPU baseline): pages that stand alone, links that resolve inside the site, the verdict
matrix and trends equal to what the results files say, older verdict rules shown, no host name by default."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench import VERDICT_RULES_VERSION
from bench.cli.main import main
from bench.results.store import load, save
from tests.conftest import REPO

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

COMPAT = sorted((REPO / "reports/compat").glob("transformers-*"))
BASELINE = REPO / "reports/baseline"
# A run judged under verdict rules 1: the transformers 5.23.0 x peft 0.18.1 compat run as it was committed before
# `nox -s compat` ran again under the current rules (the shipped compat files are current now).
OLD_RULES = REPO / "tests/fixtures/results/compat-rules-1"
INPUTS = [OLD_RULES, *COMPAT, BASELINE]
HOST = "bench-host-7f3a9c"  # a name no page would hold by chance


class Page(HTMLParser):
    """The parts of a page the tests read: links, ids, tables (as rows of cell texts with their classes)."""

    def __init__(self, text: str):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._cell_class = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.links.append(a[key])
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell, self._cell_class = [], a.get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append((" ".join("".join(self._cell).split()), self._cell_class))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def broken_links(root: Path) -> list[str]:
    """Every href/src in the site's HTML that is external or does not name a file (and id) inside the site."""
    bad = []
    for page in sorted(root.rglob("*.html")):
        for link in Page(page.read_text(encoding="utf-8")).links:
            if re.match(r"^[a-z][a-z0-9+.-]*:", link) and not link.startswith("data:"):
                bad.append(f"{page.relative_to(root)}: external {link}")
                continue
            if link.startswith("data:"):
                continue
            path, _, frag = link.partition("#")
            target = (page.parent / path).resolve() if path else page.resolve()
            if link.startswith("/") or not target.is_relative_to(root.resolve()) or not target.is_file():
                bad.append(f"{page.relative_to(root)}: {link}")
            elif frag and target.suffix == ".html" and frag not in Page(target.read_text()).ids:
                bad.append(f"{page.relative_to(root)}: no id {frag} in {path}")
    return bad


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["site", *map(str, INPUTS), "--out", str(out)]) == 0
    return out


def _expected_order() -> list[Path]:
    return sorted(INPUTS, key=lambda p: load(p).created_at)


def _pages(site: Path) -> dict[str, Page]:
    return {
        p: Page((site / p).read_text(encoding="utf-8")) for p in ("index.html", "compat.html", "trends.html")
    }


def test_the_pages_exist_and_stand_alone(site):
    for name in ("index.html", "compat.html", "trends.html"):
        text = (site / name).read_text(encoding="utf-8")
        page = Page(text)
        assert text.startswith("<!DOCTYPE html>") and {"html", "head", "title", "body"} <= page.tags, name
        assert "script" not in page.tags and "http://" not in text.replace('xmlns="http://www.w3.org', "")
        assert "https://" not in text
    reports = sorted(site.glob("runs/*/report.html"))
    assert len(reports) == len(INPUTS) == len(list(site.glob("runs/*/results.json")))
    for path in site.glob("runs/*/results.json"):
        load(path)  # each copied results file is a results file


def test_every_link_resolves_to_a_file_in_the_site(site):
    assert broken_links(site) == []
    assert len(Page((site / "index.html").read_text()).links) >= 2 * len(INPUTS)


def test_control_a_broken_or_external_link_is_found(tmp_path):
    (tmp_path / "a.html").write_text(
        '<a href="b.html">b</a><a href="missing.html">m</a><a href="https://example.org/x">x</a>'
        '<a href="b.html#nope">f</a><a href="../outside.html">o</a>'
    )
    (tmp_path / "b.html").write_text("<p id='yes'>b</p>")
    (tmp_path.parent / "outside.html").write_text("x")
    assert len(broken_links(tmp_path)) == 4


def test_runs_are_in_start_order_with_what_changed(site):
    rows = _pages(site)["index.html"].tables["runs"][1:]
    expected = [load(p) for p in _expected_order()]
    assert [r[2][0] for r in rows] == [e.created_at[:19].replace("T", " ") for e in expected]
    pairs = [r[3][0] for r in rows]
    assert pairs == [
        f"transformers {e.environment.libraries['transformers']} / peft {e.environment.libraries['peft']}"
        for e in expected
    ]
    # the compat run of transformers 5.24.0 follows one of 5.23.0: the change is named on its row
    i = pairs.index("transformers 5.24.0 / peft 0.21.2")
    assert "transformers 5.23.0 -> 5.24.0" in rows[i][8][0]
    assert rows[0][8][0] == "first run"


def test_the_compat_matrix_holds_each_runs_verdicts(site):
    table = _pages(site)["compat.html"].tables["matrix"]
    order = [load(p) for p in _expected_order()]
    by_case = {row[0][0]: row[1:] for row in table[1:]}
    every_case = {c.case_id for r in order for c in r.cases}
    assert set(by_case) == every_case
    for j, results in enumerate(order):  # read independently from each run's own file
        verdicts = {c.case_id: c.verdict for c in results.cases}
        for cid, cells in by_case.items():
            text, cls = cells[j]
            assert text == (verdicts.get(cid) or "-"), (cid, j)
            assert cls == (f"v-{verdicts[cid]}" if cid in verdicts else "absent")
    # what the shipped combinations say: peft 0.18.1 breaks every guarantee, 5.24.0 with peft 0.21 errors
    heads = [h[0] for h in table[0][1:]]
    col_0181 = next(j for j, h in enumerate(heads) if "peft 0.18.1" in h)
    col_524 = next(j for j, h in enumerate(heads) if "transformers 5.24.0" in h)
    compat_cases = [c for c in by_case if not c.startswith("recompile-control")]
    assert {by_case[c][col_0181][0] for c in compat_cases} == {"fail"}
    assert {by_case[c][col_524][0] for c in compat_cases} == {"error"}
    assert by_case["recompile-control[fp32-aot_eager]"][col_524][0] == "-"


def test_older_verdict_rules_are_shown_not_compared_silently(site):
    pages = _pages(site)
    heads = pages["compat.html"].tables["matrix"][0][1:]
    order = [load(p) for p in _expected_order()]
    for (text, cls), results in zip(heads, order, strict=True):
        stale = results.verdict_rules < VERDICT_RULES_VERSION
        assert (f"rules {results.verdict_rules} (now {VERDICT_RULES_VERSION})" in text) == stale
        assert ("stale" in cls) == stale
    assert any(r.verdict_rules < VERDICT_RULES_VERSION for r in order)  # the old compat run is
    assert any(r.verdict_rules == VERDICT_RULES_VERSION for r in order)  # the shipped ones are not
    changes = pages["compat.html"].tables["changes"][1:]
    across = [c for c in changes if c[5][0].startswith("no: verdict rules")]
    within = [c for c in changes if c[5][0] == "yes"]
    assert across and within
    for c in across:  # each of them crosses from the old-rules run to a current one
        assert "verdict rules 1 -> 3" in c[6][0]
    assert "older verdict rules" in (site / "index.html").read_text()


def test_trends_hold_each_runs_figures_and_mark_environment_changes(site):
    text = (site / "trends.html").read_text()
    tables = _pages(site)["trends.html"].tables
    order = [load(p) for p in _expected_order()]
    cid = "hotswap-peft[fp32-aot_eager-peft]"
    table = tables[f"t-{cid.replace('[', '_').replace(']', '_')}-latency_ms_median"]
    for row in table[1:]:
        step = int(row[0][0].split()[1])
        for j, results in enumerate(order):
            case = next((c for c in results.cases if c.case_id == cid), None)
            s = next((s for s in case.steps if s.index == step), None) if case else None
            want = s.timing.median_ms if s is not None and s.timing is not None else None
            got = row[1 + j][0]
            assert (got == "-") if want is None else float(got) == pytest.approx(want, rel=1e-3), (step, j)
    marks = re.findall(r'<line class="mark( rules)?"[^>]*><title>([^<]*)</title>', text)
    assert any("transformers 5.23.0 -&gt; 5.24.0" in t for _, t in marks)
    assert any(r and "verdict rules 1 -&gt; 3" in t for r, t in marks)
    assert not any(r for r, t in marks if "verdict rules" not in t)


def _with_host(tmp_path: Path, source: Path, name: str) -> Path:
    r = load(source)
    folder = tmp_path / name
    save(folder, dataclasses.replace(r, environment=dataclasses.replace(r.environment, hostname=HOST)))
    return folder


def test_no_host_name_in_any_file_unless_asked(tmp_path, cli):
    a = _with_host(tmp_path, COMPAT[0], "a")
    b = _with_host(tmp_path, COMPAT[-1], "b")
    assert cli("site", a, b, "--out", tmp_path / "site").returncode == 0
    files = [p for p in (tmp_path / "site").rglob("*") if p.is_file()]
    assert files and not [p for p in files if HOST.encode() in p.read_bytes()]
    # negative control: asked for, the host is named
    assert cli("site", a, b, "--out", tmp_path / "named", "--with-hostname").returncode == 0
    assert HOST in (tmp_path / "named/index.html").read_text()
    assert any(HOST.encode() in p.read_bytes() for p in (tmp_path / "named/runs").rglob("results.json"))


def test_a_bad_input_is_named_and_nothing_is_written(tmp_path, cli):
    out = tmp_path / "site"
    assert cli("site", COMPAT[0], "--out", out).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1}))
    res = cli("site", COMPAT[1], bad, tmp_path / "missing", "--out", out)
    assert res.returncode == 2
    assert (
        str(bad) in res.stderr
        and str(tmp_path / "missing") in res.stderr
        and "nothing was written" in res.stderr
    )
    assert str(COMPAT[1]) not in res.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "site"]  # no half-built folder left


def test_a_folder_that_is_not_a_site_is_refused(tmp_path, cli):
    out = tmp_path / "docs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = cli("site", COMPAT[0], "--out", out)
    assert res.returncode == 2 and "not a site built by peft-bench" in res.stderr
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == [
        "notes.txt"
    ]


def test_a_site_is_rebuilt_in_place(tmp_path, cli):
    out = tmp_path / "site"
    assert cli("site", COMPAT[0], "--out", out).returncode == 0
    assert cli("site", COMPAT[0], COMPAT[1] / "results.json", "--out", out).returncode == 0  # a file too
    assert len(list(out.glob("runs/*/report.html"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_a_trends_page_past_its_limit_draws_the_cases_that_moved_most_and_says_so(tmp_path, monkeypatch):
    from bench.report.site import history, pages
    from bench.results.runs import load_runs

    monkeypatch.setattr(pages, "TREND_CASES", 2)
    out = tmp_path / "site"
    assert main(["site", *map(str, INPUTS), "--out", str(out)]) == 0
    text = (out / "trends.html").read_text()
    cols = history.columns(load_runs(INPUTS))
    every = history.trends(cols)
    want = history.drawn_cases(every, 2)
    drawn = re.findall(r"<h2 id=\"[^\"]*\"><code>([^<]*)</code></h2>", text)
    assert [html.unescape(d) for d in drawn] == want
    assert history.moved(next(t for t in every if t.case_id == want[0])) > 0  # they did move
    assert f"{len({t.case_id for t in every}):,} cases: the 2 whose figures moved most" in text
