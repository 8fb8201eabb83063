"""Latency against peak memory, one panel per model, precision and workload, one point per choice
(bench.report.answers): the choices no other beats on both are the Pareto front, joined by a line. A choice
with a wrong output is a red cross, labelled, and never on the front."""

from __future__ import annotations

from bench.report import answers
from bench.report.answers import Choice
from bench.report.figure import WRONG_COLOUR, Plot, colours, log_axis, new_figure, save, spans_decades
from bench.report.flags import WRONG

MiB = 2**20


def points(rows: list[Choice]) -> dict[str, list[Choice]]:
    """Per block, the choices with both a latency and a peak."""
    out: dict[str, list[Choice]] = {}
    for r in rows:
        if r.latency is not None and r.rss_peak_bytes is not None:
            out.setdefault(r.key.block, []).append(r)
    return out


def front(choices: list[Choice]) -> list[Choice]:
    """The usable choices that no other usable choice beats on both latency and peak memory, by memory."""
    ok = sorted(
        (c for c in choices if answers.usable(c)), key=lambda c: (c.rss_peak_bytes, c.latency.estimate)
    )
    out: list[Choice] = []
    for c in ok:
        if not out or c.latency.estimate < out[-1].latency.estimate:
            out.append(c)
    return out


def pareto_plot(rows: list[Choice]) -> Plot | None:
    blocks = points(rows)
    if not blocks:
        return None
    from matplotlib.ticker import MaxNLocator

    cols = 2 if len(blocks) > 1 else 1
    nrows = (len(blocks) + cols - 1) // cols
    plt, fig, axes = new_figure(12, 3.4 * nrows + 1.2, rows=nrows, cols=cols, layout="constrained")
    flat = [axes] if nrows * cols == 1 else list(axes.ravel())
    palette = colours(sorted({c.key.way for cs in blocks.values() for c in cs}))
    for ax, (block, cs) in zip(flat, blocks.items(), strict=False):
        for c in cs:
            bad = not answers.usable(c)
            x, y = c.rss_peak_bytes / MiB, c.latency.estimate
            ax.errorbar(
                x,
                y,
                yerr=[[y - c.latency.low], [c.latency.high - y]],
                fmt="X" if bad else "o",
                ms=9 if bad else 6,
                color=WRONG_COLOUR if bad else palette[c.key.way],
                ecolor="grey",
                capsize=2,
            )
            label = f"{c.key.compile} + {c.key.way}" + (
                f"  {WRONG}" if c.wrong else ("  raised" if bad else "")
            )
            ax.annotate(
                label,
                (x, y),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=7,
                color=WRONG_COLOUR if bad else "#1d1d1f",
            )
        best = front(cs)
        if len(best) > 1:
            ax.plot(
                [c.rss_peak_bytes / MiB for c in best],
                [c.latency.estimate for c in best],
                color="black",
                lw=0.8,
                ls=":",
            )
        lat = [c.latency.estimate for c in cs]
        if spans_decades(lat, 10):
            log_axis(ax, "latency, ms (median, 95% CI; log)", axis="y")
        else:
            ax.set_ylabel("latency, ms (median, 95% CI)")
        ax.set_xlabel("peak RSS, MiB (median of the cases)")
        ax.set_title(block, fontsize=9)
        ax.margins(x=0.25, y=0.2)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.grid(alpha=0.3)
    for ax in flat[len(blocks) :]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=c, label=w) for w, c in palette.items()]
    handles += [
        Line2D([], [], marker="X", ls="", color=WRONG_COLOUR, ms=9, label=f"{WRONG} or raised: not a choice"),
        Line2D([], [], color="black", ls=":", label="Pareto front (lower is better on both)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle("Latency against peak memory per way of changing adapters", fontsize=11)
    return save(plt, fig)
