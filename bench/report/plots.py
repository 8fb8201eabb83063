"""The report's figures of latency, switch cost and training (matplotlib, Agg backend), each returned as a
Plot (bench.report.figure), or None when there is nothing to plot. Every figure's labels carry n; box plots
show the spread of the raw samples; a step whose output was wrong is drawn in red and labelled so."""

from __future__ import annotations

import importlib.util

from bench.report import data, training
from bench.report.figure import (  # noqa: F401 (Plot: the figures' type, for callers)
    WRONG_COLOUR,
    Plot,
    colours,
    horizontal,
    log_axis,
    new_figure,
    save,
)
from bench.report.flags import WRONG
from bench.report.units import number_text, ratio_text, size_text

MiB = 2**20


def _ms(v: float) -> str:
    return number_text(v)


def unavailable_reason() -> str | None:
    """Why no figure can be drawn here, or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return "figures need matplotlib, which is not installed (pip install 'peft-bench[report]')"
    return None


def latency_plot(rows: list[data.LatencyRow], wrong: dict[tuple[str, int], str] | None = None) -> Plot | None:
    """Box plots of the raw samples per case and step, log scale; `wrong` maps (case, step) to the flag of a
    step whose output was wrong (bench.report.flags): its box is red and its label says so."""
    if not rows:
        return None
    from matplotlib.patches import Patch

    wrong = wrong or {}
    plt, fig, ax = new_figure(12, max(2.5, 0.3 * len(rows) + 1.5))
    flagged = [(r.case_id, r.step) in wrong for r in rows]
    labels = [
        ("WRONG OUTPUT  " if bad else "") + f"{r.case_id} step {r.step} (n={r.n})"
        for r, bad in zip(rows, flagged, strict=True)
    ]
    palette = colours([r.compile for r in rows])
    box = ax.boxplot(
        [list(r.samples_ms) for r in rows],
        **horizontal(),
        patch_artist=True,
        widths=0.6,
        showfliers=True,
        flierprops={"markersize": 2, "alpha": 0.5},
    )
    for patch, r, bad in zip(box["boxes"], rows, flagged, strict=True):
        patch.set_facecolor(palette[r.compile])
        patch.set_alpha(0.8)
        if bad:
            patch.set_edgecolor(WRONG_COLOUR)
            patch.set_linewidth(2)
            patch.set_hatch("///")
    ax.set_yticks(range(1, len(rows) + 1), labels, fontsize=7)
    for tick, bad in zip(ax.get_yticklabels(), flagged, strict=True):
        if bad:
            tick.set_color(WRONG_COLOUR)
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    log_axis(ax, "latency per call, ms (log scale)")
    ax.set_title("Warm latency per case and step: box = IQR, line = median, whiskers = 1.5 IQR", fontsize=10)
    handles = [Patch(color=c, label=f"compile: {k}") for k, c in palette.items()]
    if any(flagged):
        handles.append(Patch(facecolor="white", edgecolor=WRONG_COLOUR, hatch="///", label=WRONG))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(plt, fig)


def switch_plot(rows: list[data.SwitchRow]) -> Plot | None:
    """One line per swap or load on a log axis (5 ms swaps and 3 s recompiling loads on one picture): the copy
    floor, the call itself, and the call plus the first model call after it."""
    rows = [r for r in rows if r.op_ms is not None]
    if not rows:
        return None
    plt, fig, ax = new_figure(12, max(2.5, 0.36 * len(rows) + 1.6))
    y = list(range(len(rows)))
    bad = [r.note.startswith(WRONG) for r in rows]
    for yi, r, wrong in zip(y, rows, bad, strict=True):
        colour = WRONG_COLOUR if wrong else "#4C72B0"
        ends = [v for v in (r.copy_floor_ms, r.op_ms, r.total_ms) if v]
        ax.plot([min(ends), max(ends)], [yi, yi], color=colour, lw=1, alpha=0.6)
        if r.total_ms is None:  # repeat_load swaps: the median call, no model call after each
            text = f"{_ms(r.op_ms)} ms, median of n={r.n} swaps"
        else:
            text = f"{_ms(r.total_ms)} ms" + (f" ({r.over_reload:.2g}x reload)" if r.over_reload else "")
        if r.over_floor is not None:
            text += f"; call = {ratio_text(r.over_floor)} floor"
        if wrong:
            text = "WRONG OUTPUT; " + text
        ax.text(max(ends) * 1.15, yi, text, va="center", fontsize=7, color=colour)
    ax.scatter(
        [r.copy_floor_ms for r in rows if r.copy_floor_ms],
        [yi for yi, r in zip(y, rows, strict=True) if r.copy_floor_ms],
        marker="|",
        s=120,
        color="black",
        label="copy floor (plain tensor copy of the adapter's bytes)",
    )
    ax.scatter(
        [r.op_ms for r in rows],
        y,
        marker="o",
        s=22,
        color="#4C72B0",
        label="the call (swap or load)",
        zorder=3,
    )
    totals = [(r.total_ms, yi) for yi, r in zip(y, rows, strict=True) if r.total_ms]
    if totals:
        ax.scatter(
            *zip(*totals, strict=True),
            marker="D",
            s=26,
            color="#DD8452",
            label="call + first model call after it",
            zorder=3,
        )
    if any(bad):
        wy = [yi for yi, b in zip(y, bad, strict=True) if b]
        wx = [rows[i].total_ms or rows[i].op_ms for i in wy]
        ax.scatter(wx, wy, marker="x", s=60, color=WRONG_COLOUR, label=WRONG + " (no x reload)", zorder=4)
    labels = [f"{r.case_id} step {r.step}: {r.kind}" for r in rows]
    ax.set_yticks(y, labels, fontsize=7)
    for tick, wrong in zip(ax.get_yticklabels(), bad, strict=True):
        if wrong:
            tick.set_color(WRONG_COLOUR)
    ax.invert_yaxis()
    lo = min(v for r in rows for v in (r.copy_floor_ms, r.op_ms) if v)
    hi = max(v for r in rows for v in (r.total_ms, r.op_ms) if v)
    # Over many decades the 2s and 5s between them would run into each other: decades only.
    log_axis(
        ax,
        "ms, log scale (single calls, n=1 each, or the median of a repeat_load's n swaps)",
        minor_labels=hi / lo < 1000,
    )
    ax.set_xlim(lo / 2, hi * 30)  # room on the right for the figures in words
    ax.set_title("Switch cost: hotswap against reloading the adapter", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(plt, fig)


def training_plot(rows: list[training.TrainRow]) -> Plot | None:
    """Left: gradient + optimizer-state bytes per train step (what LoRA saves); right: the step times."""
    if not rows:
        return None
    plt, fig, (mem, time) = new_figure(12, max(2.5, 0.45 * len(rows) + 1.6), cols=2, sharey=True)
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
    log_axis(
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
        **horizontal(),
        patch_artist=True,
        widths=0.6,
        flierprops={"markersize": 2, "alpha": 0.5},
    )
    for patch, r in zip(box["boxes"], rows, strict=True):
        patch.set_facecolor(colours[r.kind])
        patch.set_alpha(0.7)
    for yi, r in zip(y, rows, strict=True):
        time.text(1.02, yi, f"n={r.n}", va="center", fontsize=8, transform=time.get_yaxis_transform())
    log_axis(time, "ms per optimizer step (log scale)", minor_labels=True)
    time.set_title("Step time: box = IQR, line = median, whiskers = 1.5 IQR", fontsize=10)
    return save(plt, fig)
