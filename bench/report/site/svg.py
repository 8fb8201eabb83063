"""A small line chart as inline SVG text: one line per series over the runs, gaps where a run has no value,
and a vertical mark before each run whose environment changed (red where the verdict rules changed).

Hand-written SVG rather than matplotlib: no plotting library needed to build a site, the text is the same on
every machine (a site in git diffs cleanly), and it scales in the browser.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

WIDTH, HEIGHT = 640, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 14, 34
PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#57606a", "#bf3989", "#0a3069")


@dataclass(frozen=True)
class Mark:
    """A vertical line just before column `index`: what changed from the run before."""

    index: int
    title: str
    rules: bool  # the verdict rules changed here: verdicts on both sides are not comparable


def _e(text: object) -> str:
    return html.escape(str(text))


def fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def line_chart(
    title: str,
    x_labels: list[str],
    series: dict[str, tuple[float | None, ...]],
    marks: list[Mark] = (),
    *,
    scale: float = 1.0,
) -> str:
    """`series` values are divided by `scale` for display (bytes to MiB: 2**20); the title carries the unit."""
    n = len(x_labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    vals = [v / scale for s in series.values() for v in s if v is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    lo = min(lo, 0.0) if lo >= 0 and hi > 0 and lo < hi * 0.5 else lo
    if hi == lo:
        lo, hi = lo - 1 if lo else 0.0, hi + 1

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#d0d7de"/>',
    ]
    for v in (lo, (lo + hi) / 2, hi):
        out.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{_e(fmt(v))}</text>'
        )
    for i, label in enumerate(x_labels):
        out.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - 14}" text-anchor="middle" font-size="11">{_e(label)}</text>'
        )
    for m in marks:
        xm = LEFT + plot_w * m.index / n
        colour, dash = ("#cf222e", "2,2") if m.rules else ("#8c959f", "5,3")
        out.append(
            f'<line class="mark{" rules" if m.rules else ""}" x1="{xm:.1f}" x2="{xm:.1f}" y1="{TOP}" '
            f'y2="{TOP + plot_h}" stroke="{colour}" stroke-dasharray="{dash}"><title>{_e(m.title)}</title></line>'
        )
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        out += _line(values, x, y, colour, scale)
        ly = TOP + 12 + 15 * k
        out.append(
            f'<rect x="{WIDTH - RIGHT + 10}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{WIDTH - RIGHT + 24}" y="{ly + 1}" font-size="11">{_e(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _line(values, x, y, colour: str, scale: float) -> list[str]:
    out, run = [], []
    for i, v in enumerate((*values, None)):
        if v is not None:
            run.append((x(i), y(v / scale), v / scale))
            continue
        if len(run) > 1:
            pts = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in run)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        run_points = run
        run = []
        for px, py, pv in run_points:
            out.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"><title>{_e(fmt(pv))}</title></circle>'
            )
    return out
