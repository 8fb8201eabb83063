"""The report's memory and recompile figures: peak RSS per case, growth over repeated loads, and the
recompile grid. Each returns a Plot (bench.report.figure) or None."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report import memory_data
from bench.report.figure import Plot, colours, new_figure, readable_on, save

MiB = 2**20
# More cases than this and the figure shows the ones with the largest peaks (the table holds every case).
MAX_MEMORY_CASES = 40


def memory_plot(rows: list[memory_data.MemoryRow]) -> Plot | None:
    """One line per case, largest peak first: RSS from its first step's start to its peak (the dot) and where
    it ended (the tick). A line per step over 60+ cases is unreadable; this reads at any count."""
    rows = [r for r in rows if r.rss_after_bytes is not None]
    if not rows:
        return None
    by_case: dict[str, list[memory_data.MemoryRow]] = {}
    for r in rows:
        by_case.setdefault(r.case_id, []).append(r)
    spans = []
    for cid, rs in by_case.items():
        first = rs[0].rss_before_bytes or rs[0].rss_after_bytes
        peak = max((r.rss_peak_bytes or r.rss_after_bytes) for r in rs)
        spans.append((cid, first / MiB, peak / MiB, rs[-1].rss_after_bytes / MiB))
    spans.sort(key=lambda s: -s[2])
    shown = spans[:MAX_MEMORY_CASES]
    plt, fig, ax = new_figure(12, max(2.5, 0.24 * len(shown) + 1.6))
    y = list(range(len(shown)))
    for yi, (_, first, peak, _last) in zip(y, shown, strict=True):
        ax.plot([first, peak], [yi, yi], color="#4C72B0", lw=2, alpha=0.5)
    ax.scatter(
        [s[1] for s in shown], y, marker="o", facecolors="none", color="#4C72B0", s=20, label="RSS at start"
    )
    ax.scatter(
        [s[2] for s in shown], y, marker="o", color="#C44E52", s=24, label="peak (kernel high-water mark)"
    )
    ax.scatter([s[3] for s in shown], y, marker="|", color="black", s=80, label="RSS after the last step")
    ax.set_yticks(y, [s[0] for s in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("process RSS, MiB (one reading per step edge, n=1)")
    more = f" (the {len(shown)} largest of {len(spans)} cases)" if len(spans) > len(shown) else ""
    ax.set_title(f"Memory per case: start, peak and end{more}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(plt, fig)


def growth_plot(series: list[memory_data.GrowthSeries]) -> Plot | None:
    if not series:
        return None
    plt, fig, ax = new_figure(12, 4.5)
    palette = colours([s.case_id + s.label for s in series])
    for s in series:
        first = s.rss_after_bytes[0]
        slope = "" if s.growth_bytes_per_load is None else f", {s.growth_bytes_per_load / 1024:.0f} KiB/load"
        ax.plot(
            range(1, len(s.rss_after_bytes) + 1),
            [(v - first) / MiB for v in s.rss_after_bytes],
            marker="o",
            ms=3,
            color=palette[s.case_id + s.label],
            label=f"{s.case_id}: {s.label} (n={len(s.rss_after_bytes)}{slope})",
        )
    ax.set_xlabel("load number")
    ax.set_ylabel("RSS growth since the first load, MiB")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Memory growth over repeated loads", fontsize=10)
    ax.grid(alpha=0.3)
    # Below the axes; the tight save keeps it inside the picture.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    return save(plt, fig)


@dataclass(frozen=True)
class Cell:
    row: int
    col: int
    text: str
    background: tuple[float, float, float]
    foreground: tuple[float, float, float]


def recompile_cells(rows: list[memory_data.RecompileRow]) -> tuple[list[str], list[int], list[Cell], float]:
    """(cases, steps, cells, vmax): each cell's colour from the Reds colour map and a text colour readable on
    it (black or white, whichever contrasts more)."""
    import matplotlib

    active = memory_data.has_compile_activity(rows)
    rows = [r for r in rows if r.case_id in active]
    cases = list(dict.fromkeys(r.case_id for r in rows))
    steps = sorted({r.step for r in rows})
    vmax = max([2.0, *(float(r.recompiles) for r in rows)])
    cmap = matplotlib.colormaps["Reds"]
    cells = []
    for r in rows:
        bg = tuple(float(c) for c in cmap(r.recompiles / vmax)[:3])
        text = str(r.recompiles) + (f" ({r.frame_compiles})" if r.frame_compiles else "")
        text += f"\n{r.graph_breaks} gb" if r.graph_breaks else ""
        cells.append(Cell(cases.index(r.case_id), steps.index(r.step), text, bg, readable_on(bg)))
    return cases, steps, cells, vmax


def recompile_plot(rows: list[memory_data.RecompileRow]) -> Plot | None:
    """A case x step grid: the cell's colour is its recompiles, the text recompiles (frame compiles)."""
    cases, steps, cells, vmax = recompile_cells(rows)
    if not cells:
        return None
    import numpy as np

    grid = np.full((len(cases), len(steps)), np.nan)
    plt, fig, ax = new_figure(12, max(2.2, 0.36 * len(cases) + 1.8))
    for c in cells:
        grid[c.row, c.col] = float(c.text.split()[0])
        ax.text(c.col, c.row, c.text, ha="center", va="center", fontsize=8, color=c.foreground)
    cmap = plt.get_cmap("Reds").with_extremes(bad="#f0f0f0")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    bar.set_label("recompiles in the step")
    ax.set_xticks(range(len(steps)), [str(s) for s in steps], fontsize=8)
    ax.set_yticks(range(len(cases)), cases, fontsize=8)
    ax.set_xlabel("step (grey: the case has no such step or it was not run)")
    ax.set_title("Recompiles per step: count (frame compiles in parentheses; gb = graph breaks)", fontsize=10)
    return save(plt, fig)
