"""Deciding a step: what happened (StepRun, the probes' stats) and what it was checked against (Evidence) in,
outcomes and a StepRecord out. Pure functions: nothing here loads a model, calls one or times anything.
"""

from __future__ import annotations

from bench.engine.serving.outcomes import serving_outcomes
from bench.errors import error_text
from bench.ops import OPS
from bench.results.measures import TimingStats
from bench.results.records import Outcome, StepRecord
from bench.results.serving_records import ServingRecord
from bench.results.verdict import find_known, outcome, step_status
from bench.spec.cases import Case
from bench.spec.schema import Step
from bench.spec.state import AdapterState
from bench.worker.facts import Evidence, StepRun
from bench.worker.output_outcomes import evidence_outcomes


def decide(
    params: dict[str, str],
    step: Step,
    run: StepRun,
    mem,
    comp,
    strict: bool,
    state: AdapterState,
    evidence: Evidence,
    require_oracles: bool = False,
) -> StepRecord:
    """The step's outcomes and record from what happened (run, probes) and what was checked (evidence). Pure:
    it loads nothing, calls no model and times nothing."""
    notes = list(run.notes)  # the run's own, then what deciding adds; the StepRun is left as it came
    outcomes: list[Outcome] = []
    err_text = error_text(run.op_error) if run.op_error else None

    outcomes += _call_outcomes(params, step, run, err_text)
    outcomes += _compile_outcomes(params, step, run, comp, err_text, notes)

    # The output against its references before what only the op decides, so that a wrong output is what the
    # case's reason and its reproduction script lead with.
    outcomes += evidence_outcomes(params, step, run, evidence, notes)
    op = OPS[step.op]
    if run.op_error is None:
        # What only this op decides (active_adapters' names, plain_model, loss_decreases, swap_in_place): bench/ops.
        outcomes += op.own_outcomes(step, run.op_result, state, params)
    if evidence.unverified and require_oracles:
        outcomes.append(
            outcome(
                "oracles_agree",
                "both oracles",
                evidence.unverified,
                False,
                f"--require-oracles: this step's output could not be verified by both oracles: {evidence.unverified}",
                find_known(step.known_failures, "oracles_agree", params),
            )
        )

    if evidence.serving is not None:
        outcomes.extend(serving_outcomes(params, step, evidence.serving, run.compiled))

    notes += evidence.notes
    if run.recompile_errors:
        notes.append(
            "RecompileError under error_on_recompile=True; the call was repeated unguarded to record the output"
        )
    status = step_status(outcomes)
    # What apply returned, where the op keeps it in the record (TrainStats, RepeatStats).
    kept = {op.result_field: run.op_result} if op.result_field and run.op_error is None else {}
    return StepRecord(
        index=step.index,
        op=step.op,
        args=op.args(step),
        status=status,
        strict=strict,
        op_time_ms=run.op_time_ms,
        first_call_ms=run.first_call_ms,
        timing=run.timing if run.timing is not None else _serving_timing(evidence.serving),
        compile=comp,
        memory=mem,
        output=evidence.output,
        contrast=evidence.contrast,
        oracle_agreement=evidence.oracle_agreement,
        steady_output=evidence.steady_output,
        outcomes=tuple(outcomes),
        error=err_text,
        recompile_error=run.recompile_errors[0] if run.recompile_errors else None,
        notes=tuple(notes),
        adapter_bytes=evidence.adapter_bytes,
        copy_floor_ms=evidence.copy_floor_ms,
        serving=evidence.serving,
        unverified=_unverified(step, comp, evidence.unverified),
        **kept,
    )


def _call_outcomes(params, step: Step, run: StepRun, err_text: str | None) -> list[Outcome]:
    """The op call itself: it raised what `raises` names, or it succeeded."""
    kf, e = step.known_failures, step.expect
    out: list[Outcome] = []
    if e.raises is not None:
        names = _mro_names(run.op_error)
        held = e.raises in names
        actual = err_text or "no exception"
        out.append(
            outcome(
                "raises",
                e.raises,
                actual,
                held,
                f"expected {e.raises}, got {actual}",
                find_known(kf, "raises", params),
                error_types=names,
            )
        )
    else:
        out.append(
            outcome(
                "succeeds",
                "no exception",
                err_text or "no exception",
                run.op_error is None,
                f"raised {err_text}",
                find_known(kf, "succeeds", params),
                error_types=_mro_names(run.op_error),
            )
        )
    return out


def _compile_outcomes(
    params, step: Step, run: StepRun, comp, err_text: str | None, notes: list[str]
) -> list[Outcome]:
    """Recompiles, graph breaks and whether the compile took effect; `notes` gets why a count was not evaluated."""
    kf, e = step.known_failures, step.expect
    out: list[Outcome] = []
    if not run.compiled and (e.recompiles or e.graph_breaks):
        notes.append(
            "recompile and graph-break expectations not evaluated: the model is not compiled in this case"
        )
    elif not run.called_model and (e.recompiles or e.graph_breaks):
        # No call, no graph to guard: a count of 0 here would be a pass that tested nothing.
        notes.append(
            "recompile and graph-break expectations not evaluated: the step made no model call"
            + (f" ({err_text})" if err_text else "")
        )
    counted = run.compiled and run.called_model
    if e.recompiles is not None and comp is not None and counted:
        held = not run.recompile_errors and e.recompiles.holds(comp.recompiles)
        why = run.recompile_errors[0] if run.recompile_errors else "; ".join(comp.recompile_reasons[:3])
        out.append(
            outcome(
                "recompiles",
                str(e.recompiles),
                str(comp.recompiles),
                held,
                f"{comp.recompiles} recompile(s), expected {e.recompiles}" + (f": {why}" if why else ""),
                find_known(kf, "recompiles", params),
                measured=comp.recompiles,
            )
        )
    if run.first_call_after_compile and comp is not None:
        out.append(
            outcome(
                "compile_effective",
                ">= 1 frame compile",
                f"{comp.frame_compiles} frame compile(s)",
                comp.frame_compiles >= 1,
                "compile had no effect: the first model call after the compile step compiled no frame, so "
                "the model ran eager and no recompile count means anything",
                find_known(kf, "compile_effective", params),
            )
        )
    if e.cuda_graph_recordings is not None and comp is not None and counted:
        if comp.cuda_graph_recordings is None:
            notes.append(f"cuda_graph_recordings not evaluated: {graphs_not_measured(comp)}")
        else:
            n = comp.cuda_graph_recordings
            out.append(
                outcome(
                    "cuda_graph_recordings",
                    str(e.cuda_graph_recordings),
                    str(n),
                    e.cuda_graph_recordings.holds(n),
                    f"{n} CUDA graph recording(s) and {comp.cuda_graph_skips} skip(s), expected "
                    f"{e.cuda_graph_recordings} recording(s)",
                    find_known(kf, "cuda_graph_recordings", params),
                    measured=n,
                )
            )
    if e.graph_breaks is not None and comp is not None and counted:
        out.append(
            outcome(
                "graph_breaks",
                str(e.graph_breaks),
                str(comp.graph_breaks),
                e.graph_breaks.holds(comp.graph_breaks),
                f"{comp.graph_breaks} graph break(s), expected {e.graph_breaks}: "
                + "; ".join(comp.graph_break_reasons[:3]),
                find_known(kf, "graph_breaks", params),
                measured=comp.graph_breaks,
            )
        )
    return out


def graphs_not_measured(comp) -> str:
    return comp.cuda_graph_unavailable or "no CUDA graph count for this step"


def _unverified(step: Step, comp, oracles: str | None) -> str | None:
    """Why the step's pass is not fully verified: an oracle that could not run, or a CUDA graph count that
    was expected but could not be taken here (never a silent pass)."""
    parts = [oracles] if oracles else []
    if (
        step.expect.cuda_graph_recordings is not None
        and comp is not None
        and comp.cuda_graph_recordings is None
    ):
        parts.append(f"cuda_graph_recordings: {graphs_not_measured(comp)}")
    return "; ".join(parts) or None


def _serving_timing(serving: ServingRecord | None) -> TimingStats | None:
    """A serve step's per-request latencies as its timing: what the gate compares between runs."""
    if serving is None or not serving.requests:
        return None
    return TimingStats.from_samples([r.latency_ms for r in serving.requests])


def _mro_names(exc: BaseException | None) -> tuple[str, ...]:
    return tuple(c.__name__ for c in type(exc).__mro__) if exc is not None else ()


def unmeasured(step: Step, status: str, note: str) -> StepRecord:
    """A step that made no call: nothing was measured, and the note says why."""
    return StepRecord(
        index=step.index,
        op=step.op,
        args=OPS[step.op].args(step),
        status=status,
        strict=False,
        op_time_ms=None,
        first_call_ms=None,
        timing=None,
        compile=None,
        memory=None,
        output=None,
        notes=(note,),
    )


def not_run_record(step: Step, why: str) -> StepRecord:
    return unmeasured(step, "not_run", why)


def skipped(step: Step, note: str) -> StepRecord:
    """A step this case does not run (Op.skip_note: compile under the setting 'none'), a pass that says why."""
    return unmeasured(step, "pass", note)


def scenario_outcomes(case: Case, total_recompiles: int, total_breaks: int) -> list[Outcome]:
    """The scenario-level [expect] against the case's totals."""
    e = case.scenario.expect
    out = []
    if e.total_recompiles is not None:
        out.append(
            outcome(
                "recompiles",
                str(e.total_recompiles),
                str(total_recompiles),
                e.total_recompiles.holds(total_recompiles),
                f"{total_recompiles} recompile(s) in the case, expected {e.total_recompiles}",
                find_known(e.known_failures, "recompiles", case.params),
            )
        )
    if e.total_graph_breaks is not None:
        out.append(
            outcome(
                "graph_breaks",
                str(e.total_graph_breaks),
                str(total_breaks),
                e.total_graph_breaks.holds(total_breaks),
                f"{total_breaks} graph break(s) in the case, expected {e.total_graph_breaks}",
                find_known(e.known_failures, "graph_breaks", case.params),
            )
        )
    return out
