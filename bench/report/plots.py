"""The report's figures (matplotlib, Agg backend), each returned as PNG bytes, or None when there is nothing
to plot. Every figure's labels carry n; box plots show the spread of the raw samples."""

from __future__ import annotations

import importlib.util
import io

from bench.report import data, training
from bench.report.units import ratio_text, size_text

MiB = 2**20
# One colour per compile setting / path, in a fixed order, so that figures agree with each other.
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")


def unavailable_reason() -> str | None:
    """Why no figure can be drawn here, or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return "figures need matplotlib, which is not installed (pip install 'peft-bench[report]')"
    return None


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _colours(keys: list[str]) -> dict[str, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(dict.fromkeys(keys))}


def _horizontal() -> dict[str, object]:
    import matplotlib

    # matplotlib 3.10 renamed vert=False to orientation="horizontal" (and deprecates the old name).
    if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10):
        return {"orientation": "horizontal"}
    return {"vert": False}


def latency_plot(rows: list[data.LatencyRow]) -> bytes | None:
    if not rows:
        return None
    from matplotlib.patches import Patch

    plt, fig, ax = _figure(12, max(2.5, 0.42 * len(rows) + 1.5))
    labels = [f"{r.case_id} step {r.step} (n={r.n})" for r in rows]
    colours = _colours([r.compile for r in rows])
    box = ax.boxplot(
        [list(r.samples_ms) for r in rows],
        **_horizontal(),
        patch_artist=True,
        widths=0.6,
        showfliers=True,
        flierprops={"markersize": 2, "alpha": 0.5},
    )
    for patch, r in zip(box["boxes"], rows, strict=True):
        patch.set_facecolor(colours[r.compile])
        patch.set_alpha(0.8)
    ax.set_yticks(range(1, len(rows) + 1), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 2, 5, 10 rather than 2x10^0
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.set_xlabel("latency per call, ms (log scale)")
    ax.set_title("Warm latency per case and step: box = IQR, line = median, whiskers = 1.5 IQR", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(
        handles=[Patch(color=c, label=f"compile: {k}") for k, c in colours.items()],
        fontsize=8,
        loc="lower right",
    )
    return _png(plt, fig)


def switch_plot(rows: list[data.SwitchRow]) -> bytes | None:
    rows = [r for r in rows if r.op_ms is not None]
    if not rows:
        return None
    plt, fig, ax = _figure(12, max(2.5, 0.45 * len(rows) + 1.5))
    labels = [f"{r.case_id} step {r.step}: {r.kind}" for r in rows]
    y = list(range(len(rows)))
    ops = [r.op_ms or 0.0 for r in rows]
    firsts = [r.first_call_ms or 0.0 for r in rows]
    ax.barh(y, ops, color="#4C72B0", label="the call (swap or load)")
    ax.barh(y, firsts, left=ops, color="#DD8452", label="first model call after it")
    ends = [r.op_ms + (r.first_call_ms or 0.0) for r in rows]
    for yi, r, end in zip(y, rows, ends, strict=True):
        if r.total_ms is None:  # repeat_load swaps: the median call, no model call after each
            text = f"{r.op_ms:.3g} ms, median of n={r.n} swaps"
        else:
            text = f"{r.total_ms:.3g} ms" + (
                f"  ({r.over_reload:.2g}x reload)" if r.over_reload and r.kind != "reload" else ""
            )
        if r.over_floor is not None:  # the floor is too small to see on this axis: say it in words
            text += f"; copy floor {r.copy_floor_ms:.2g} ms, call = {ratio_text(r.over_floor)} floor"
        ax.text(end, yi, "  " + text, va="center", fontsize=8)
        if r.copy_floor_ms:
            ax.plot([r.copy_floor_ms], [yi], marker="|", color="black", markersize=14)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(
        "ms (single calls, n=1 each, or the median of a repeat_load's n swaps; black tick: copy floor)"
    )
    ax.set_xlim(0, max(ends) * 1.8)
    ax.set_title("Switch cost: hotswap against reloading the adapter", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _png(plt, fig)


def _log_axis(ax, label: str, *, minor_labels: bool) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10, not 10^1
    # A narrow range has one decade or none: label 2 and 5 within it, or the axis has no numbers at all.
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else "")
        if minor_labels
        else NullFormatter()
    )
    ax.set_xlabel(label)
    ax.grid(axis="x", which="both", alpha=0.3)


def training_plot(rows: list[training.TrainRow]) -> bytes | None:
    """Left: gradient + optimizer-state bytes per train step (what LoRA saves); right: the step times."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (mem, time) = plt.subplots(
        1, 2, figsize=(12, max(2.5, 0.45 * len(rows) + 1.6)), dpi=100, sharey=True
    )
    y = list(range(len(rows)))
    colours = {"full": "#C44E52", "LoRA": "#4C72B0"}
    grads = [r.grad_bytes / 1024 for r in rows]
    states = [r.optimizer_state_bytes / 1024 for r in rows]
    mem.barh(y, grads, color=[colours[r.kind] for r in rows], label="gradients")
    mem.barh(y, states, left=grads, color=[colours[r.kind] for r in rows], alpha=0.45, label="AdamW state")
    for yi, r in zip(y, rows, strict=True):
        mem.text(
            r.train_state_bytes / 1024, yi, " " + size_text(r.train_state_bytes), va="center", fontsize=8
        )
    mem.set_yticks(y, [f"{r.case_id} step {r.step} ({r.kind})" for r in rows], fontsize=8)
    mem.invert_yaxis()
    _log_axis(
        mem,
        "KiB held after the last step (log scale; dark: gradients, light: AdamW state)",
        minor_labels=False,
    )
    # Bars start at 0, which a log axis cannot show: set both ends so the smallest gradient stays visible.
    mem.set_xlim(min(grads) / 4, max(r.train_state_bytes for r in rows) / 1024 * 4)
    mem.set_title("Gradients + optimizer state per train step (exact byte counts)", fontsize=10)
    box = time.boxplot(
        [list(r.step_samples_ms) for r in rows],
        positions=y,
        manage_ticks=False,  # keep the case labels the two panels share
        **_horizontal(),
        patch_artist=True,
        widths=0.6,
        flierprops={"markersize": 2, "alpha": 0.5},
    )
    for patch, r in zip(box["boxes"], rows, strict=True):
        patch.set_facecolor(colours[r.kind])
        patch.set_alpha(0.7)
    for yi, r in zip(y, rows, strict=True):
        time.text(1.02, yi, f"n={r.n}", va="center", fontsize=8, transform=time.get_yaxis_transform())
    _log_axis(time, "ms per optimizer step (log scale)", minor_labels=True)
    time.set_title("Step time: box = IQR, line = median, whiskers = 1.5 IQR", fontsize=10)
    return _png(plt, fig)


def memory_plot(rows: list[data.MemoryRow]) -> bytes | None:
    rows = [r for r in rows if r.rss_after_bytes is not None]
    if not rows:
        return None
    plt, fig, ax = _figure(12, 5.5)
    by_case: dict[str, list[data.MemoryRow]] = {}
    for r in rows:
        by_case.setdefault(r.case_id, []).append(r)
    colours = _colours(list(by_case))
    for cid, rs in by_case.items():
        steps = [r.step for r in rs]
        ax.plot(steps, [r.rss_after_bytes / MiB for r in rs], marker="o", ms=3, color=colours[cid], label=cid)
        peaks = [(r.step, r.rss_peak_bytes / MiB) for r in rs if r.rss_peak_bytes is not None]
        if peaks:
            ax.scatter(*zip(*peaks, strict=True), marker="^", s=18, color=colours[cid], alpha=0.6)
    ax.set_xlabel("step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("process RSS, MiB")
    ax.set_title(
        "RSS after each step (line) and the step's peak (triangles); one reading per step, n=1", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    return _png(plt, fig)


def growth_plot(series: list[data.GrowthSeries]) -> bytes | None:
    if not series:
        return None
    plt, fig, ax = _figure(12, 4.5)
    colours = _colours([s.case_id + s.label for s in series])
    for s in series:
        first = s.rss_after_bytes[0]
        slope = "" if s.growth_bytes_per_load is None else f", {s.growth_bytes_per_load / 1024:.0f} KiB/load"
        ax.plot(
            range(1, len(s.rss_after_bytes) + 1),
            [(v - first) / MiB for v in s.rss_after_bytes],
            marker="o",
            ms=3,
            color=colours[s.case_id + s.label],
            label=f"{s.case_id}: {s.label} (n={len(s.rss_after_bytes)}{slope})",
        )
    ax.set_xlabel("load number")
    ax.set_ylabel("RSS growth since the first load, MiB")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Memory growth over repeated loads", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    return _png(plt, fig)


def recompile_plot(rows: list[data.RecompileRow]) -> bytes | None:
    """A case x step grid: the cell's colour is its recompiles, the text recompiles (frame compiles)."""
    active = data.has_compile_activity(rows)
    rows = [r for r in rows if r.case_id in active]
    if not rows:
        return None
    import numpy as np

    cases = list(dict.fromkeys(r.case_id for r in rows))
    steps = sorted({r.step for r in rows})
    grid = np.full((len(cases), len(steps)), np.nan)
    plt, fig, ax = _figure(12, max(2.2, 0.45 * len(cases) + 1.6))
    for r in rows:
        i, j = cases.index(r.case_id), steps.index(r.step)
        grid[i, j] = r.recompiles
        text = str(r.recompiles) + (f" ({r.frame_compiles})" if r.frame_compiles else "")
        text += f"\n{r.graph_breaks} gb" if r.graph_breaks else ""
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if r.recompiles else "black")
    cmap = plt.get_cmap("Reds").with_extremes(bad="#f0f0f0")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=max(2.0, np.nanmax(grid)), aspect="auto")
    ax.set_xticks(range(len(steps)), [str(s) for s in steps], fontsize=8)
    ax.set_yticks(range(len(cases)), cases, fontsize=8)
    ax.set_xlabel("step (grey: the case has no such step or it was not run)")
    ax.set_title("Recompiles per step: count (frame compiles in parentheses; gb = graph breaks)", fontsize=10)
    return _png(plt, fig)
