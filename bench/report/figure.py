"""What every report figure shares: a matplotlib figure on the Agg backend, saved as PNG with its whole
content inside the picture (bbox "tight": a legend placed below the axes is drawn, never cut off), the
palette, and a text colour readable on any cell colour.

A figure comes back as a Plot: the PNG, and what a reader can read on it (title, axis labels, legend
entries), taken from the matplotlib objects as they were drawn, so the HTML can say it in the alt text and a
test can check that a figure has a legend at all."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

# One colour per compile setting / path, in a fixed order, so that figures agree with each other.
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
WRONG_COLOUR = "#D62728"  # a wrong output, in every figure
# WCAG 2 minimum contrast for normal text.
MIN_CONTRAST = 4.5


@dataclass(frozen=True)
class Plot:
    png: bytes
    titles: tuple[str, ...]
    axis_labels: tuple[str, ...]
    legend: tuple[str, ...]  # legend entries and colour-bar labels
    width_px: int
    height_px: int
    scales: tuple[str, ...] = ()  # "x:log", "y:linear", ... per axes drawn

    @property
    def alt(self) -> str:
        parts = ["; ".join(self.titles)]
        if self.axis_labels:
            parts.append("axes: " + "; ".join(self.axis_labels))
        if self.legend:
            parts.append("legend: " + "; ".join(self.legend))
        return ". ".join(p for p in parts if p)


def new_figure(width: float, height: float, *, rows: int = 1, cols: int = 1, **kw):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(rows, cols, figsize=(width, height), dpi=100, **kw)
    return plt, fig, ax


def _png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])  # the IHDR chunk: width, height


def _texts(fig) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    titles, labels, legend = [], [], []
    legends = list(fig.legends)
    for ax in fig.axes:
        if ax.get_title():
            titles.append(ax.get_title())
        labels += [t for t in (ax.get_xlabel(), ax.get_ylabel()) if t]
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
    for lg in legends:
        legend += [t.get_text() for t in lg.get_texts() if t.get_text()]
    for ax in fig.axes:  # a colour bar is an axes of its own, its label the legend of the colours
        if ax.get_label() == "<colorbar>" and ax.get_ylabel():
            legend.append(ax.get_ylabel())
    if fig._suptitle is not None and fig._suptitle.get_text():
        titles.insert(0, fig._suptitle.get_text())
    return tuple(titles), tuple(labels), tuple(legend)


def save(plt, fig) -> Plot:
    titles, labels, legend = _texts(fig)
    scales = tuple(
        f"{name}:{get()}"
        for ax in fig.axes
        if ax.get_visible() and ax.get_label() != "<colorbar>"
        for name, get in (("x", ax.get_xscale), ("y", ax.get_yscale))
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    png = buf.getvalue()
    w, h = _png_size(png)
    return Plot(png, titles, labels, legend, w, h, scales)


def colours(keys: list[str]) -> dict[str, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(dict.fromkeys(keys))}


def horizontal() -> dict[str, object]:
    import matplotlib

    # matplotlib 3.10 renamed vert=False to orientation="horizontal" (and deprecates the old name).
    if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10):
        return {"orientation": "horizontal"}
    return {"vert": False}


def log_axis(ax, label: str, *, axis: str = "x", minor_labels: bool = True) -> None:
    """A log axis that reads 2, 5, 10, 20 (not 10^1), with 2 and 5 labelled inside a narrow range."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    which = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    which.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else "")
        if minor_labels
        else NullFormatter()
    )
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(label)
    ax.grid(axis=axis, which="both", alpha=0.3)


def spans_decades(values: list[float], factor: float = 20.0) -> bool:
    """Whether a linear axis would squash the small values: the largest over the smallest positive one."""
    pos = [v for v in values if v and v > 0]
    return bool(pos) and max(pos) / min(pos) >= factor


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: tuple[float, float, float], bg: tuple[float, float, float]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours (1 to 21)."""
    a, b = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


BLACK = (0.0, 0.0, 0.0)
WHITE = (1.0, 1.0, 1.0)


def readable_on(bg: tuple[float, float, float]) -> tuple[float, float, float]:
    """Black or white, whichever contrasts more with the background."""
    return BLACK if contrast(BLACK, bg) >= contrast(WHITE, bg) else WHITE
