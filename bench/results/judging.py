"""The part of a case that compare and gate read (bench.judge), kept apart from the full record.

results.parquet (bench.results.columnar) holds, beside each case's full JSON, a `judge` column: the case
reduced to the fields bench.judge.{compare,figures} read (verdict, parameters, outcomes' known failures, the
footprint, and per step its index, op, status, hotswap flag, op and first-call times, output match, compile
counts, peak memory, raw timing samples and why an oracle did not verify it). It is about a tenth of the
record, and a case read from it is a handful of small objects instead of a CaseResult of hundreds.

`case_view` builds, from that reduced data, objects with the same attribute names and values as the
CaseResult / StepRecord they stand for (floats where the record types say float, the Verdict enum), so the
same judge functions run on them and decide the same findings (tests/results/test_judging.py compares both
paths on real files). The views are read-only stand-ins (named tuples: a frozen dataclass's checked
__setattr__ made building them a third of the command's time at 20,000 cases), for judging only: nothing
writes them back.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from bench.results.finite import NOTES_KEY
from bench.results.records import Verdict


def _f(value: Any) -> Any:
    """As bench.spec.codec converts a value typed float: an int in the JSON becomes a float. Done when the
    column is written (JSON keeps 5.0 a float), so that reading it converts nothing."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _outcomes(items: Any) -> list[list]:
    return [[o.get("status"), o.get("known_failure")] for o in items or ()]


def _step(s: dict[str, Any]) -> list:
    """One step as a list, read back by position in _step_view (a JSON array parses faster than an object)."""
    c, t, m, o = s.get("compile"), s.get("timing"), s.get("memory"), s.get("output")
    args = s.get("args") or {}
    return [
        s["index"],
        s["op"],
        s["status"],
        "hotswap" in args,
        args.get("hotswap"),
        _f(s.get("op_time_ms")),
        _f(s.get("first_call_ms")),
        None if t is None else [_f(x) for x in t["samples_ms"]],
        None if c is None else [c["recompiles"], c["frame_compiles"], c["graph_breaks"]],
        None if m is None else [m.get("rss_peak_bytes"), m.get("cuda_allocated_peak_bytes")],
        None if o is None else o["matches"],
        _outcomes(s.get("outcomes")),
        s.get("unverified"),
    ]


def reduce_case(case: dict[str, Any]) -> dict[str, Any] | None:
    """The judged fields of one case's JSON data (as results.json holds it); None for a case whose record
    carries non-finite notes: its values need the full load's handling, so a reader falls back."""
    if case.get(NOTES_KEY):
        return None
    fp = case.get("footprint")
    return {
        "id": case["case_id"],
        "sc": case["scenario"],
        "p": case.get("params") or {},
        "v": case["verdict"],
        "tr": case.get("total_recompiles"),
        "tg": case.get("total_graph_breaks"),
        "fp": None if fp is None else [fp["memory_footprint_bytes"], fp["quant_state_bytes"]],
        "so": _outcomes(case.get("scenario_outcomes")),
        "s": [_step(s) for s in case.get("steps") or ()],
    }


def _record_outcomes(items: Any) -> list[list]:
    return [[o.status, o.known_failure] for o in items]


def _record_step(s: Any) -> list:
    """_step for a StepRecord: what _step gives for its JSON data."""
    c, t, m, o = s.compile, s.timing, s.memory, s.output
    return [
        s.index,
        s.op,
        s.status,
        "hotswap" in s.args,
        s.args.get("hotswap"),
        _f(s.op_time_ms),
        _f(s.first_call_ms),
        None if t is None else [_f(x) for x in t.samples_ms],
        None if c is None else [c.recompiles, c.frame_compiles, c.graph_breaks],
        None if m is None else [m.rss_peak_bytes, m.cuda_allocated_peak_bytes],
        None if o is None else o.matches,
        _record_outcomes(s.outcomes),
        s.unverified,
    ]


def reduce_record(case: Any) -> dict[str, Any] | None:
    """reduce_case for a CaseResult: the same data reduce_case gives for the case's JSON data (a save writes
    the column from the records it holds, without a JSON round trip; tests/results/test_writing.py compares
    both on real files). Only for a case whose values are all finite: a save cleans the others first."""
    if case.non_finite:
        return None
    fp = case.footprint
    return {
        "id": case.case_id,
        "sc": case.scenario,
        "p": case.params or {},
        "v": case.verdict,
        "tr": case.total_recompiles,
        "tg": case.total_graph_breaks,
        "fp": None if fp is None else [fp.memory_footprint_bytes, fp.quant_state_bytes],
        "so": _record_outcomes(case.scenario_outcomes),
        "s": [_record_step(s) for s in case.steps],
    }


class OutcomeView(NamedTuple):
    status: str
    known_failure: str | None


class CompileView(NamedTuple):
    recompiles: int
    frame_compiles: int
    graph_breaks: int


class TimingView(NamedTuple):
    samples_ms: tuple[float, ...]


class MemoryView(NamedTuple):
    rss_peak_bytes: int | None
    cuda_allocated_peak_bytes: int | None


class OutputView(NamedTuple):
    matches: bool


class FootprintView(NamedTuple):
    memory_footprint_bytes: int
    quant_state_bytes: int


class StepView(NamedTuple):
    index: int
    op: str
    args: dict[str, Any]
    status: str
    op_time_ms: float | None
    first_call_ms: float | None
    timing: TimingView | None
    compile: CompileView | None
    memory: MemoryView | None
    output: OutputView | None
    outcomes: tuple[OutcomeView, ...]
    unverified: str | None  # StepRecord.unverified (None in columns written before it was kept)


class CaseView(NamedTuple):
    case_id: str
    scenario: str
    params: dict[str, str]
    verdict: Verdict
    steps: tuple[StepView, ...]
    footprint: FootprintView | None
    total_recompiles: int | None
    total_graph_breaks: int | None
    scenario_outcomes: tuple[OutcomeView, ...]


def _step_view(s: list) -> StepView:
    index, op, status, has_hotswap, hotswap, op_time_ms, first_call_ms, t, c, m, o, outcomes, *rest = s
    return StepView(
        index,
        op,
        {"hotswap": hotswap} if has_hotswap else {},
        status,
        op_time_ms,
        first_call_ms,
        None if t is None else TimingView(tuple(t)),
        None if c is None else CompileView(*c),
        None if m is None else MemoryView(*m),
        None if o is None else OutputView(o),
        tuple(OutcomeView(*x) for x in outcomes),
        rest[0] if rest else None,
    )


def case_view(data: dict[str, Any]) -> CaseView:
    """The stand-in for one case, from reduce_case's data."""
    fp = data["fp"]
    return CaseView(
        case_id=data["id"],
        scenario=data["sc"],
        params=data["p"],
        verdict=Verdict(data["v"]),
        steps=tuple(_step_view(s) for s in data["s"]),
        footprint=None if fp is None else FootprintView(*fp),
        total_recompiles=data["tr"],
        total_graph_breaks=data["tg"],
        scenario_outcomes=tuple(OutcomeView(*x) for x in data["so"]),
    )
