"""The report's sections as formatted tables, the same for Markdown and HTML: each renderer only lays out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.report import answers, data, flags, memory_data, training
from bench.report.data import MAX_TABLE_ROWS, TABLES_NOTE
from bench.report.memo import per_results
from bench.report.units import number_text, size_text
from bench.report.units import ratio_text as _ratio
from bench.results.brief import clipped
from bench.results.records import Results

MiB = 2**20


@dataclass(frozen=True)
class ReportTable:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    collapsed: bool = False  # long detail: folded away by default


@dataclass(frozen=True)
class Section:
    key: str  # also names the section's figure
    title: str
    intro: str
    tables: tuple[ReportTable, ...] = ()
    empty: str = ""  # shown instead of the tables when there is nothing to show
    notes: tuple[str, ...] = field(default_factory=tuple)
    lead: tuple[str, ...] = ()  # the section's conclusions, as a list before its tables


def _ms(v: float | None) -> str:
    return "-" if v is None else number_text(v)


def _mib(v: int | float | None) -> str:
    return "-" if v is None else f"{v / MiB:.1f}"


def _floor_note(r: data.SwitchRow) -> str:
    if r.copy_floor_ms is not None:
        return ""
    if r.note.startswith("raised"):  # nothing was moved: no size, no floor, and nothing to explain by them
        return "no copy floor: the swap raised before moving the adapter's bytes"
    if r.adapter_bytes is None:
        return "no copy floor: the adapter's size is unknown (a Hub adapter, or an older results file)"
    return "no copy floor recorded"


def _table(
    header: list[str],
    rows: Sequence[Any] | data.Listed,
    cells: Callable[[Any], list[object]] | None = None,
    **kw: Any,
) -> ReportTable:
    """`rows`: the table's rows as lists of cells, or records that `cells` turns into them, or the first ones
    of them and their number (data.Listed). Bounded: a run of 20,000 cases lists its first MAX_TABLE_ROWS
    rows and says where the rest are; `cells` is called for the rows listed only (formatting every row of
    20,000 cases was seconds of a report's time)."""
    shown = data.as_listed(rows)
    rows, total = shown.rows, shown.total
    if total > MAX_TABLE_ROWS:
        more = f"First {MAX_TABLE_ROWS} of {total} rows; {TABLES_NOTE}."
        kw["caption"] = f"{kw['caption']} {more}" if kw.get("caption") else more
        rows = rows[:MAX_TABLE_ROWS]
    if cells is not None:
        rows = [cells(r) for r in rows]
    return ReportTable(tuple(header), tuple(tuple(clipped(str(c)) for c in r) for r in rows), **kw)


@per_results
def verdicts(results: Results) -> Section:
    rows, cols, cells = data.verdict_matrix(results)
    return Section(
        "verdicts",
        "Verdicts",
        "Scenario (and hotswap path where it varies) against precision / compile setting. xfail: a known "
        "upstream failure, marked in the scenario with its reason.",
        (_table(["scenario", *cols], [[r, *(cells.get((r, c), "") for c in cols)] for r in rows]),),
    )


def latency(results: Results) -> Section:
    rows = data.latency_listed(results)
    labels = {
        (c.case_id, s.index): flags.output_label(s) for c, s in data.latency_steps(results)[:MAX_TABLE_ROWS]
    }
    return Section(
        "latency",
        "Latency per precision and compile setting",
        "Warm repeated calls after the warm-up; n is the number of timed calls, the spread the interquartile "
        "range (IQR). A step whose output did not match its reference is flagged in the output column: its "
        "times are of a wrong answer.",
        (
            _table(
                [
                    "case",
                    "step",
                    "precision",
                    "compile",
                    "n",
                    "median ms",
                    "IQR ms",
                    "p90 ms",
                    "min ms",
                    "max ms",
                    "output",
                ],
                rows,
                lambda r: (
                    [r.case_id, f"{r.step} ({r.op})", r.precision, r.compile, r.n]
                    + [_ms(r.median_ms), _ms(r.iqr_ms), _ms(r.p90_ms), _ms(r.min_ms), _ms(r.max_ms)]
                    + [labels.get((r.case_id, r.step), "not checked")]
                ),
            ),
        )
        if rows.total
        else (),
        empty="No measured calls in this run.",
    )


def switch(results: Results) -> Section:
    rows = answers.with_run_reloads(results, data.switch_rows(results))
    return Section(
        "switch",
        "Switch cost: hotswap against reloading",
        "The swap (or plain load) call plus the first model call after it, which carries any recompile. x reload "
        "sets a swap against a plain load into the same (compiled) model, with its recompile; a swap whose "
        "output did not match is flagged and gets no x reload. Single "
        "calls, n=1 each (a repeat_load row: the median of its n swaps): read them as orders of magnitude. The copy floor is a plain tensor copy of the "
        "adapter's bytes (timed once, n=1), the least any swap can cost; call / floor is how many times that "
        "floor the swap (or load) call took.",
        (
            _table(
                [
                    "case",
                    "step",
                    "path",
                    "n",
                    "call ms",
                    "first call ms",
                    "total ms",
                    "x reload",
                    "recompiles",
                ]
                + ["adapter KiB", "copy floor ms", "call / floor", "note"],
                rows,
                lambda r: (
                    [r.case_id, r.step, r.kind, r.n, _ms(r.op_ms), _ms(r.first_call_ms), _ms(r.total_ms)]
                    + ["-" if r.over_reload is None else f"{r.over_reload:.2g}x"]
                    + ["-" if r.recompiles is None else r.recompiles]
                    + ["-" if r.adapter_bytes is None else f"{r.adapter_bytes / 1024:.1f}"]
                    + [
                        _ms(r.copy_floor_ms),
                        _ratio(r.over_floor),
                        "; ".join(n for n in (r.note, _floor_note(r)) if n),
                    ]
                ),
            ),
        )
        if rows
        else (),
        empty="No hotswap steps in this run.",
    )


def _signed_size(v: int | None) -> str:
    return "-" if v is None else ("-" if v < 0 else "") + size_text(abs(v))


def train(results: Results) -> Section:
    rows = training.train_rows(results)
    if not rows:
        return Section("training", "Training", "", empty="No train steps in this run.")
    savings = training.lora_savings(rows)
    steps = sorted({r.n for r in rows})
    tables = [
        _table(
            ["case", "step", "precision", "kind", "trainable params", "grad", "optimizer state"]
            + ["peak RSS MiB", "n", "step median ms", "IQR ms", "loss first -> last"],
            [
                [r.case_id, r.step, r.precision, r.kind]
                + [f"{r.trainable_params:,} of {r.total_params:,} ({r.trainable_percent:.3g}%)"]
                + [size_text(r.grad_bytes), size_text(r.optimizer_state_bytes)]
                + [_mib(r.rss_peak_bytes) if r.rss_peak_bytes is not None else f"- ({r.rss_unavailable})"]
                + [r.n, _ms(r.step_median_ms), _ms(r.step_iqr_ms), f"{r.loss_first:.4g} -> {r.loss_last:.4g}"]
                for r in rows
            ],
        )
    ]
    notes = training.unpaired_notes(rows, savings)
    if savings:
        # One note shared by every row is said once, below the table, rather than in a column of repeats.
        shared = {v.note for v in savings}
        per_row = len(shared) > 1
        if not per_row and shared != {""}:
            notes.append("Every row: " + shared.pop() + ".")
        tables.append(
            _table(
                ["LoRA case", "full case", "precision", "grad + optimizer full", "grad + optimizer LoRA"]
                + ["saved", "full / LoRA", "peak RSS full MiB", "peak RSS LoRA MiB", "RSS saved MiB"]
                + ["RSS full / LoRA"]
                + (["note"] if per_row else []),
                [
                    [v.lora.case_id, v.full.case_id, v.lora.precision]
                    + [size_text(v.full.train_state_bytes), size_text(v.lora.train_state_bytes)]
                    + [_signed_size(v.train_state_saved_bytes), _ratio(v.train_state_ratio)]
                    + [_mib(v.full.rss_peak_bytes), _mib(v.lora.rss_peak_bytes), _mib(v.rss_peak_saved_bytes)]
                    + [_ratio(v.rss_peak_ratio)]
                    + ([v.note] if per_row else [])
                    for v in savings
                ],
                caption="What LoRA saves against full fine-tuning",
            )
        )
    return Section(
        "training",
        "Training",
        "One row per train step: AdamW on synthetic token batches. n is the number of optimizer steps timed "
        f"(here {', '.join(map(str, steps))}; every step of the loop, the first included, which allocates the "
        "optimizer state), the spread their interquartile range (IQR). Parameter and byte counts are exact "
        "(the tensors held after the last step); peak RSS is one reading per step (n=1), the kernel's "
        "high-water mark over the whole train step, so it includes the process's runtime. A LoRA case is set "
        "against the full fine-tuning case of the same base model (its parameter count) and precision: saved "
        "= full minus LoRA.",
        tuple(tables),
        notes=tuple(notes),
    )


def memory(results: Results) -> Section:
    rows = memory_data.memory_listed(results)
    if not rows.total:
        return Section("memory", "Memory per step", "", empty="No memory figures in this run.")

    def summary(item: tuple[str, list[memory_data.MemoryRow]]) -> list[object]:
        cid, rs = item
        peaks = [r.rss_peak_bytes for r in rs if r.rss_peak_bytes is not None]
        top = max(rs, key=lambda r: r.rss_peak_bytes or 0)
        cuda = [r.cuda_allocated_peak_bytes for r in rs if r.cuda_allocated_peak_bytes is not None]
        return (
            [cid, len(rs), _mib(rs[0].rss_before_bytes), _mib(rs[-1].rss_after_bytes)]
            + [_mib(max(peaks)) if peaks else "-", f"{top.step} ({top.op})"]
            + [_mib(max(cuda)) if cuda else f"- ({rs[0].unavailable})" if rs[0].unavailable else "-"]
        )

    return Section(
        "memory",
        "Memory per step",
        "Process RSS at each step's edges (one reading each, n=1); the peak is the kernel's high-water mark, "
        "reset at the start of each step.",
        (
            _table(
                ["case", "steps", "RSS first MiB", "RSS last MiB", "peak MiB", "peak at", "CUDA peak MiB"],
                memory_data.memory_by_case(results),
                summary,
            ),
            _table(
                ["case", "step", "RSS before MiB", "RSS after MiB", "delta MiB", "peak MiB", "CUDA peak MiB"],
                rows,
                lambda r: (
                    [r.case_id, f"{r.step} ({r.op})", _mib(r.rss_before_bytes), _mib(r.rss_after_bytes)]
                    + [_mib(r.rss_delta_bytes), _mib(r.rss_peak_bytes), _mib(r.cuda_allocated_peak_bytes)]
                ),
                caption="Memory per step",
                collapsed=True,
            ),
        ),
    )


def growth(results: Results) -> Section:
    series = memory_data.growth_listed(results)
    return Section(
        "growth",
        "Memory growth over repeated loads",
        "RSS after each load, from the first; the slope is a least-squares fit over the loads. A leak shows as "
        "a slope near the adapter's size; hotswap into one slot should stay flat.",
        (
            _table(
                ["case", "loads", "n", "RSS first MiB", "RSS last MiB", "growth per load KiB", "adapter KiB"],
                series,
                lambda s: (
                    [s.case_id, s.label, len(s.rss_after_bytes), _mib(s.rss_after_bytes[0])]
                    + [_mib(s.rss_after_bytes[-1])]
                    + ["-" if s.growth_bytes_per_load is None else f"{s.growth_bytes_per_load / 1024:.1f}"]
                    + ["-" if s.adapter_bytes_per_load is None else f"{s.adapter_bytes_per_load / 1024:.1f}"]
                ),
            ),
        )
        if series.total
        else (),
        empty="No case loads adapters more than once.",
    )


def recompiles(results: Results) -> Section:
    # The figure shows every step; the table lists the steps where dynamo did something, or was told to fail.
    rows = memory_data.recompile_table(results)
    return Section(
        "recompiles",
        "Recompiles per step",
        "Dynamo's work in each step of the compiled cases (deterministic counts). Strict steps ran under "
        "error_on_recompile=True; the reason is the guard that failed.",
        (
            _table(
                [
                    "case",
                    "step",
                    "recompiles",
                    "frame compiles",
                    "graph breaks",
                    "compile s",
                    "strict",
                    "reason",
                ],
                rows,
                lambda r: (
                    [r.case_id, f"{r.step} ({r.op})", r.recompiles, r.frame_compiles, r.graph_breaks]
                    + [f"{r.compile_time_s:.2f}", "yes" if r.strict else "", r.first_reason[:200]]
                ),
            ),
        )
        if rows.total
        else (),
        empty="No step compiled anything (eager cases only).",
    )
