"""The HTML report as a reader sees it: rendered in headless Chromium at 1400 px (tests/browser/render.py).

Marked `browser`: `nox -s tests` deselects them and `nox -s browser` (which installs Chromium when it is
missing) runs them, so they are never skipped and called done.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report.build import write_reports
from bench.results.store import load
from tests.browser.render import chromium, render, sideways_overflow
from tests.conftest import REPO

pytestmark = pytest.mark.browser

WIDTH = 1400
RESULTS = {
    "failing": REPO / "tests" / "fixtures" / "results" / "failing",  # the silent wrong alpha hotswap
    "baseline": REPO / "reports" / "baseline",  # a swap that raised, and the wrong one
    "serving": REPO / "reports" / "serving-cpu",  # 27 of 48 responses wrong
}
WRONG_ROW_CELLS = "tr.wrong > td:first-child"
FLAG_CELLS = (".s-answers tr.wrong td.flag", ".s-serving tr.wrong td.flag")
DECIDE = ".s-answers ul.decide"


@pytest.fixture(scope="module", autouse=True)
def _browser():
    assert chromium() is not None, "no chromium: run these through `nox -s browser`, which installs it"


@pytest.fixture(scope="module", params=sorted(RESULTS))
def seen(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    write_reports(load(RESULTS[request.param]), out, ("html",), roots=(REPO,))
    return request.param, render(
        out / "report.html",
        out / "browser",
        width=WIDTH,
        selectors=(WRONG_ROW_CELLS, *FLAG_CELLS, DECIDE),
        screenshot=True,
    )


def test_the_page_does_not_scroll_sideways(seen):
    name, r = seen
    assert r.measured["innerWidth"] == WIDTH
    assert sideways_overflow(r, name) == []


def test_every_figure_has_labels_or_a_legend_and_fits(seen):
    name, r = seen
    images = r.measured["images"]
    assert images, name
    for img in images:
        assert img["complete"] and img["naturalWidth"] > 0, f"{name}: a figure did not load"
        assert "axes:" in img["alt"] or "legend:" in img["alt"], f"{name}: {img['alt']!r}"
        assert img["box"]["right"] <= r.measured["innerWidth"], f"{name}: a figure is wider than the page"


def test_wrong_output_rows_are_visible(seen):
    name, r = seen
    rows = r.measured["marked"][WRONG_ROW_CELLS]
    assert rows, f"{name}: no wrong-output row flagged"
    for cell in rows:
        if cell["inDetails"]:
            continue
        assert cell["painted"] and cell["box"]["right"] <= r.measured["innerWidth"]
        assert cell["background"] == "rgb(255, 235, 233)", cell  # the row's red tint
    # Where a reader decides (the answers, the serving strategies) the flag itself is on screen, unscrolled.
    flags = [c for sel in FLAG_CELLS for c in r.measured["marked"][sel]]
    assert flags, name
    assert all(c["painted"] and c["box"]["right"] <= r.measured["innerWidth"] for c in flags), flags


def test_the_first_screen_holds_the_answer(seen):
    name, r = seen
    (decide,) = r.measured["marked"][DECIDE]
    assert "fastest: " in decide["text"] and "avoid " in decide["text"], decide["text"]
    assert decide["box"]["bottom"] <= r.measured["innerHeight"], (
        f"{name}: the answer is below the first screen"
    )
    assert r.screenshot is not None and r.screenshot.stat().st_size > 10_000


def test_the_probe_sees_overflow_and_scrollers(tmp_path):
    """The helper's own control: a table wider than the window without a scroller overflows the page; the same
    table inside an overflow-x:auto wrapper does not."""
    cells = "".join(f"<td>column-{i}-with-long-text</td>" for i in range(60))
    bare = tmp_path / "bare.html"
    bare.write_text(f"<!DOCTYPE html><html><body><table><tr>{cells}</tr></table></body></html>")
    wrapped = tmp_path / "wrapped.html"
    wrapped.write_text(
        "<!DOCTYPE html><html><body><div style='overflow-x:auto'>"
        f"<table><tr>{cells}</tr></table></div></body></html>"
    )
    a = render(bare, tmp_path / "a", width=WIDTH).measured
    b = render(wrapped, tmp_path / "b", width=WIDTH).measured
    assert a["scrollWidth"] > a["innerWidth"] and a["tables"][0]["scroller"] is None
    assert b["scrollWidth"] <= b["innerWidth"] and b["tables"][0]["scroller"]["right"] <= WIDTH


def test_render_reaches_files_beside_the_page(tmp_path: Path):
    """A static site's page links images by relative path: the probe runs on a copy beside the page."""
    (tmp_path / "pic.svg").write_text(
        "<svg xmlns='http://www.w3.org/2000/svg' width='40' height='30'><rect width='40' height='30'/></svg>"
    )
    page = tmp_path / "index.html"
    page.write_text("<!DOCTYPE html><html><body><img alt='axes: x' src='pic.svg'></body></html>")
    (img,) = render(page, tmp_path / "w", width=800).measured["images"]
    assert img["naturalWidth"] == 40 and img["complete"]
