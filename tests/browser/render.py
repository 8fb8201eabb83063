"""Render a page in headless Chromium at a given width and return what a reader sees, measured in the page.

No Python package beyond the standard library: the page is copied, a small script is injected that measures
the DOM once the page has loaded and writes the result as JSON into an element, and `chromium --dump-dom`
prints the DOM after the scripts ran. The measurement (PROBE) is generic: page overflow, images and their
alt text and drawn size, tables and whether each fits or scrolls inside its own wrapper, and the elements a
caller marks by CSS selector (are they inside the viewport's width, are they painted). A test for any
static page (a report, a generated site) can call `render`.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

RESULT_ID = "peft-bench-probe-result"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

PROBE = r"""
(function () {
  function box(el) { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top,
    bottom: r.bottom, width: r.width, height: r.height}; }
  function painted(el) { const s = getComputedStyle(el); return s.display !== 'none' &&
    s.visibility !== 'hidden' && el.getClientRects().length > 0; }
  function scroller(el) { for (let p = el.parentElement; p; p = p.parentElement) {
      const s = getComputedStyle(p).overflowX; if (s === 'auto' || s === 'scroll') return p; } return null; }
  function measure() {
    const se = document.scrollingElement;
    const out = {innerWidth: innerWidth, innerHeight: innerHeight, scrollWidth: se.scrollWidth,
      scrollHeight: se.scrollHeight, images: [], tables: [], marked: {}};
    for (const img of document.images) {
      out.images.push({alt: img.alt || '', complete: img.complete, naturalWidth: img.naturalWidth,
        box: box(img), painted: painted(img)});
    }
    for (const t of document.querySelectorAll('table')) {
      const w = scroller(t);
      out.tables.push({box: box(t), scroller: w ? box(w) : null, scrollerClient: w ? w.clientWidth : null,
        inDetails: !!t.closest('details'), painted: painted(t)});
    }
    const sel = JSON.parse(document.getElementById('__SELECTORS__').textContent);
    for (const s of sel) {
      out.marked[s] = Array.from(document.querySelectorAll(s)).map(function (el) {
        return {text: el.textContent.slice(0, 4000), box: box(el), painted: painted(el),
          background: getComputedStyle(el).backgroundColor, color: getComputedStyle(el).color,
          inDetails: !!el.closest('details:not([open])')}; });
    }
    const pre = document.createElement('pre');
    pre.id = '__RESULT__';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  if (document.readyState === 'complete') measure(); else addEventListener('load', measure);
})();
"""


@dataclass(frozen=True)
class Rendered:
    width: int
    measured: dict  # what PROBE returned
    screenshot: Path | None


def chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _inject(page: str, selectors: list[str]) -> str:
    script = PROBE.replace("__RESULT__", RESULT_ID).replace("__SELECTORS__", RESULT_ID + "-selectors")
    tag = (
        f"<script type='application/json' id='{RESULT_ID}-selectors'>{json.dumps(selectors)}</script>"
        f"<script>{script}</script>"
    )
    if "</body>" not in page:
        return page + tag
    head, _, tail = page.rpartition("</body>")
    return head + tag + "</body>" + tail


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def render(
    page: Path,
    work: Path,
    *,
    width: int = 1400,
    height: int = 1000,
    selectors: tuple[str, ...] = (),
    screenshot: bool = False,
    timeout: float = 120.0,
) -> Rendered:
    """Load `page` (an HTML file; files beside it stay reachable by their relative links: the copy is written
    next to it) in headless Chromium at width x height, and return the PROBE's measurements; `selectors`
    are CSS selectors whose matches are measured too. `work` receives the browser profile and screenshot."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("no chromium on PATH (nox -s browser installs it)")
    work.mkdir(parents=True, exist_ok=True)
    probed = page.with_name(f".probe-{page.name}")
    probed.write_text(_inject(page.read_text(encoding="utf-8"), list(selectors)), encoding="utf-8")
    base = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={work / 'profile'}",
        f"--window-size={width},{height}",
        "--virtual-time-budget=5000",
    ]
    try:
        proc = _run([*base, "--dump-dom", probed.as_uri()], timeout)
        shot = None
        if screenshot:
            shot = work / f"{page.stem}-{width}.png"
            _run([*base, f"--screenshot={shot}", page.as_uri()], timeout)
            shot = shot if shot.is_file() else None
    finally:
        probed.unlink(missing_ok=True)
    found = re.search(rf'<pre id="{RESULT_ID}">(.*?)</pre>', proc.stdout, re.DOTALL)
    if found is None:
        raise RuntimeError(f"the probe wrote nothing (exit {proc.returncode}): {proc.stderr[-2000:]}")

    return Rendered(width, json.loads(html.unescape(found.group(1))), shot)


def sideways_overflow(rendered: Rendered, name: str) -> list[str]:
    """What makes a reader scroll sideways at the rendered width: the page itself wider than the window, or
    a painted table that runs off the page without its own scrolling wrapper. Empty: nothing does."""
    m = rendered.measured
    problems = []
    if m["scrollWidth"] > m["innerWidth"]:
        problems.append(f"{name}: page {m['scrollWidth']} px wide at {m['innerWidth']}")
    for t in m["tables"]:
        if not t["painted"]:
            continue  # folded away in a <details>
        fits = t["box"]["right"] <= m["innerWidth"]
        scrolls = t["scroller"] is not None and t["scroller"]["right"] <= m["innerWidth"]
        if not (fits or scrolls):
            problems.append(f"{name}: a table runs off the page: {t}")
    return problems
