"""The figures compare and the report read from a case's records: a switch's cost, the reload it is held
against, peak memory, the eager twin of a compiled case."""

from __future__ import annotations

from bench.ops import op_named
from bench.results.failures import output_wrong
from bench.results.records import CaseResult, Results, StepRecord


def switch_ms(step: StepRecord) -> float | None:
    """Swap (or load) call plus the first call after it: what serving pays for one change."""
    if step.op_time_ms is None or step.first_call_ms is None:
        return None
    return step.op_time_ms + step.first_call_ms


def is_hotswap(step: StepRecord) -> bool:
    # The argument first: most steps have none, and the op look-up is the dearer half (20 calls a case).
    return bool(step.args.get("hotswap")) and op_named(step.op).loads_into_model


def reload_step(case: CaseResult) -> StepRecord | None:
    """The cost a hotswap avoids: the case's first plain (non-hotswap) load_adapter with both timings and a
    matching output that ran on the model the swaps run on. In a compiled case that is a load AFTER the
    compile step, whose first call carries the recompile a reload costs; a load before it ran eager and
    would make any swap look slow."""
    compiled_at = next(
        (s.index for s in case.steps if op_named(s.op).compiles and s.compile is not None), None
    )
    return next(
        (
            s
            for s in case.steps
            if op_named(s.op).loads_into_model
            and not is_hotswap(s)
            and switch_ms(s) is not None
            and not output_wrong(s)
            and (compiled_at is None or s.index > compiled_at)
        ),
        None,
    )


def switch_over_reload(case: CaseResult, step: StepRecord) -> float | None:
    """(swap + first call) / (reload + first call); None when either is missing or the swap's output was
    wrong: a wrong answer is never a speed-up."""
    reload = reload_step(case)
    swap = switch_ms(step)
    if reload is None or swap is None or output_wrong(step):
        return None
    return swap / switch_ms(reload)


def case_peak(case: CaseResult, field: str) -> int | None:
    values = [
        getattr(s.memory, field) for s in case.steps if s.memory and getattr(s.memory, field) is not None
    ]
    return max(values) if values else None


def footprint_bytes(case: CaseResult) -> int | None:
    f = case.footprint
    return None if f is None else f.memory_footprint_bytes + f.quant_state_bytes


def eager_index(results: Results) -> dict[tuple, CaseResult]:
    """The run's cases by (scenario, parameters), built once per run so that finding each case's eager twin is a
    look-up: a scan of the run for every case was quadratic in its size."""
    index: dict[tuple, CaseResult] = {}
    for c in results.cases:
        index.setdefault((c.scenario, tuple(sorted(c.params.items()))), c)  # the first, as a scan found
    return index


def eager_twin(case: CaseResult, index: dict[tuple, CaseResult]) -> CaseResult | None:
    """The same scenario and parameters with compile 'none', in the same run (`index`: eager_index(run))."""
    if case.params.get("compile") == "none":
        return None
    want = {**case.params, "compile": "none"}
    return index.get((case.scenario, tuple(sorted(want.items()))))


def first_measured(case: CaseResult) -> StepRecord | None:
    return next((s for s in case.steps if s.timing is not None), None)
