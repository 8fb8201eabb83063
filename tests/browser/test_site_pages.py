"""`peft-bench site` as a reader sees it: each page of a site over real runs (the four shipped compat
combinations, two transformers versions, and the CPU baseline), rendered in headless Chromium at 1400 px.

Marked `browser` like test_report_page.py: run by `nox -s browser`, deselected by `nox -s tests`."""

from __future__ import annotations

import pytest

from bench.cli.main import main
from tests.browser.render import chromium, render, sideways_overflow
from tests.conftest import REPO

pytestmark = pytest.mark.browser

WIDTH = 1400
INPUTS = [*sorted((REPO / "reports/compat").glob("transformers-*")), REPO / "reports/baseline"]
PAGES = ("index.html", "compat.html", "trends.html")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    assert chromium() is not None, "no chromium: run these through `nox -s browser`, which installs it"
    assert len(INPUTS) >= 3
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["site", *map(str, INPUTS), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module", params=PAGES)
def seen(request, site, tmp_path_factory):
    work = tmp_path_factory.mktemp(request.param.replace(".", "-"))
    return request.param, render(site / request.param, work, width=WIDTH, selectors=("svg", "table", "a"))


def test_a_site_page_opens_and_does_not_scroll_sideways(seen):
    name, r = seen
    assert r.measured["innerWidth"] == WIDTH
    assert sideways_overflow(r, name) == []


def test_every_site_page_shows_something_to_read(seen):
    """A page that failed to render shows no table, no plot and no link (the control: an empty page)."""
    name, r = seen
    shown = {sel: [e for e in r.measured["marked"][sel] if e["painted"]] for sel in ("svg", "table", "a")}
    assert shown["a"], f"{name}: no link painted"
    assert shown["table"] or shown["svg"], f"{name}: neither a table nor a plot painted"


def test_trend_plots_are_drawn_with_their_titles(site, tmp_path):
    r = render(site / "trends.html", tmp_path, width=WIDTH, selectors=("svg", "svg > title"))
    plots = [e for e in r.measured["marked"]["svg"] if e["painted"]]
    assert plots, "no trend plot drawn"
    assert all(e["box"]["width"] > 100 and e["box"]["height"] > 50 for e in plots), plots[:2]
    titles = [e["text"] for e in r.measured["marked"]["svg > title"]]
    assert len(titles) == len(r.measured["marked"]["svg"]) and all(titles), "a plot without a title"


def test_the_probe_sees_an_empty_page_as_empty(tmp_path):
    """Negative control for the checks above: a page with nothing on it fails them."""
    page = tmp_path / "empty.html"
    page.write_text("<!doctype html><html><body></body></html>")
    r = render(page, tmp_path / "work", width=WIDTH, selectors=("svg", "table", "a"))
    assert not any(r.measured["marked"][sel] for sel in ("svg", "table", "a"))


def test_the_overflow_check_sees_a_page_wider_than_the_window(tmp_path):
    """Negative control for sideways_overflow: a table twice the window's width, outside any scroller."""
    page = tmp_path / "wide.html"
    page.write_text(
        f"<!doctype html><html><body><table><tr><td><div style='width:{2 * WIDTH}px'>x</div></td></tr></table></body></html>"
    )
    r = render(page, tmp_path / "work", width=WIDTH)
    problems = sideways_overflow(r, "wide")
    assert any("page" in p for p in problems) and any("table runs off" in p for p in problems), problems
