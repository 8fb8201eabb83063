"""results.csv: flat rows, one per case, step and metric, with the case's parameters as columns (for pandas;
docs/results-schema.md). Built from the records; the columnar copy keeps each case's rows as CSV text too
(bench.results.writing), so that a merge writes them without building the record again."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Container, Iterator
from typing import Any

from bench.results.records import CaseResult, Results, StepRecord

ROW_FIELDS = (
    "case_id",
    "scenario",
    "precision",
    "compile",
    "hotswap_path",
    "strategy",
    "verdict",
    "step",
    "op",
    "step_status",
    "metric",
    "value",
    "unit",
)


# (metric, the record's field, unit) of a step's timing and compile statistics, in results.csv's order.
_TIMING_METRICS = (
    ("latency_ms_median", "median_ms", "ms"),
    ("latency_ms_min", "min_ms", "ms"),
    ("latency_ms_mean", "mean_ms", "ms"),
    ("latency_ms_p90", "p90_ms", "ms"),
    ("latency_ms_stdev", "stdev_ms", "ms"),
    ("latency_ms_iqr", "iqr_ms", "ms"),
    ("latency_n", "n", "count"),
)
_COMPILE_METRICS = (
    ("recompiles", "recompiles", "count"),
    ("frame_compiles", "frame_compiles", "count"),
    ("graph_breaks", "graph_breaks", "count"),
    ("compile_time_s", "compile_time_s", "s"),
)


# The case-level row every case has (value 1): count cases by verdict with df[df.metric == "case"].
CASE_METRIC = "case"


def step_metrics(step: StepRecord) -> Iterator[tuple[str, Any, str]]:
    yield "op_time_ms", step.op_time_ms, "ms"
    yield "first_call_ms", step.first_call_ms, "ms"
    for stats, metrics in ((step.timing, _TIMING_METRICS), (step.compile, _COMPILE_METRICS)):
        if stats:
            yield from ((metric, getattr(stats, field), unit) for metric, field, unit in metrics)
    if step.memory:
        m = step.memory
        for name in (
            "rss_before_bytes",
            "rss_after_bytes",
            "rss_peak_bytes",
            "cuda_allocated_peak_bytes",
            "cuda_reserved_peak_bytes",
            "nvml_process_used_bytes",
            "nvml_device_used_bytes",
        ):
            if getattr(m, name) is not None:
                yield name, getattr(m, name), "bytes"
        if m.rss_delta_bytes is not None:
            yield "rss_delta_bytes", m.rss_delta_bytes, "bytes"
    if step.output:
        if step.output.max_abs_diff is not None:
            yield "output_max_abs_diff", step.output.max_abs_diff, "abs"
            yield "output_max_rel_diff", step.output.max_rel_diff, "rel"
        yield "output_matches", int(step.output.matches), "bool"
    for eff in step.effects:  # files written before `contrast`
        yield f"adapter_effect_max_abs[{eff.adapter}]", eff.max_abs_effect, "abs"
    if step.contrast is not None:
        yield "contrast_margin", step.contrast.margin, "ratio"
    yield "adapter_bytes", step.adapter_bytes, "bytes"
    yield "copy_floor_ms", step.copy_floor_ms, "ms"
    if step.serving is not None and step.serving.figures is not None:
        for f in dataclasses.fields(step.serving.figures):
            name = f.name
            unit = (
                "ms" if "_ms" in name else "bytes" if "bytes" in name else "s" if name.endswith("_s") else ""
            )
            unit = "per s" if name in ("throughput_rps", "tokens_per_s") else unit or "count"
            yield f"serving_{name}", getattr(step.serving.figures, name), unit


def row_lists(results: Results, metrics: Container[str] | None = None) -> Iterator[list[Any]]:
    """The flat rows as lists, in ROW_FIELDS order (what results.csv holds, without a dict per row); `metrics`:
    only the rows of those metrics (None: every row)."""
    for case in results.cases:
        yield from case_rows(case, metrics)


def case_rows(case: CaseResult, metrics: Container[str] | None = None) -> Iterator[list[Any]]:
    """One case's flat rows (row_lists); `metrics`: only the rows of those, the others never made (a site's
    trends want 5 of about 40 metrics, over 1.7 million rows at 20,000 cases)."""
    base = [
        case.case_id,
        case.scenario,
        *(case.params.get(k) for k in ("precision", "compile", "hotswap_path", "strategy")),
        case.verdict,
    ]
    for step in case.steps:
        head = [*base, step.index, step.op, step.status]
        for metric, value, unit in step_metrics(step):
            if value is not None and (metrics is None or metric in metrics):
                yield [*head, metric, value, unit]
    if case.total_recompiles is not None and (metrics is None or "total_recompiles" in metrics):
        yield [*base, None, None, None, "total_recompiles", case.total_recompiles, "count"]
    for phase, seconds in case.phases_s.items():
        if metrics is None or f"phase_{phase}" in metrics:
            yield [*base, None, None, None, f"phase_{phase}", seconds, "s"]
    # One row per case whatever it measured: an errored or unfinished case has no other, and a table without
    # it counted only the cases that ran (a published pass rate over its rows left every error out).
    if metrics is None or CASE_METRIC in metrics:
        yield [*base, None, None, None, CASE_METRIC, 1, "count"]


def rows(results: Results) -> Iterator[dict[str, Any]]:
    for row in row_lists(results):
        yield dict(zip(ROW_FIELDS, row, strict=True))


def write_header(f) -> None:
    csv.writer(f, lineterminator="\n").writerow(ROW_FIELDS)


def write_rows(f, results: Results) -> None:
    write_header(f)
    csv.writer(f, lineterminator="\n").writerows(row_lists(results))


def to_csv(results: Results) -> str:
    buf = io.StringIO()
    write_rows(buf, results)
    return buf.getvalue()


def case_csv(case: CaseResult) -> str:
    """One case's rows as results.csv holds them: CSV text, each line ending in a newline (no header)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(case_rows(case))
    return buf.getvalue()
