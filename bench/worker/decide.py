"""Deciding a step: what happened (StepRun, the probes' stats) and what it was checked against (Evidence) in,
outcomes and a StepRecord out. Pure functions: nothing here loads a model, calls one or times anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.engine.serving.outcomes import serving_outcomes
from bench.errors import error_text
from bench.ops import OPS
from bench.results.measures import OracleAgreement, OutputCheck, StateContrast, TimingStats
from bench.results.records import Outcome, StepRecord
from bench.results.serving_records import ServingRecord
from bench.results.verdict import find_known, outcome, step_status
from bench.spec.cases import Case
from bench.spec.schema import Step
from bench.spec.state import AdapterState


@dataclass
class StepRun:
    """What happened during one step, before it is decided."""

    op_time_ms: float | None = None
    op_result: Any = None  # what the op reports: TrainStats, RepeatStats, active adapter names
    first_call_ms: float | None = None
    first_output: Any = None
    timing: Any = None
    op_error: BaseException | None = None
    recompile_errors: list[str] = field(default_factory=list)
    compiled: bool = False  # the model was compiled when the step ran: recompile expectations apply
    notes: list[str] = field(default_factory=list)
    # This step made the first model call after the compile step: it must have compiled at least one frame.
    first_call_after_compile: bool = False
    last_output: Any = None  # the last timed call's output (forward / generate): the steady-state check
    refused: bool = False  # the op raised and the step declared `raises`: a call checks nothing changed
    call_error: str | None = None  # the model call after a refused op raised
    called_model: bool = False  # a model call was made: only then can a recompile be counted


@dataclass(frozen=True)
class Evidence:
    """What the step's output was checked against (bench.worker.execute gathers it)."""

    output: OutputCheck | None = None
    contrast: StateContrast | None = None  # the new state's reference against the previous state's
    adapter_bytes: int | None = None  # bytes of adapter weights a load moved
    copy_floor_ms: float | None = None  # a plain tensor copy of as many bytes
    notes: tuple[str, ...] = ()
    # Building the reference raised: the step cannot be judged, and the fault is the oracle's, not the op's.
    reference_error: str | None = None
    oracle_agreement: OracleAgreement | None = None  # the library's reference against the math oracle
    serving: ServingRecord | None = None  # a serve step: every request, checked, and the figures
    steady_output: OutputCheck | None = None  # the last timed call against the same reference


def decide(
    params: dict[str, str],
    step: Step,
    run: StepRun,
    mem,
    comp,
    strict: bool,
    state: AdapterState,
    evidence: Evidence,
) -> StepRecord:
    """The step's outcomes and record from what happened (run, probes) and what was checked (evidence). Pure:
    it loads nothing, calls no model and times nothing."""
    notes = list(run.notes)  # the run's own, then what deciding adds; the StepRun is left as it came
    outcomes: list[Outcome] = []
    err_text = error_text(run.op_error) if run.op_error else None

    outcomes += _call_outcomes(params, step, run, err_text)
    outcomes += _compile_outcomes(params, step, run, comp, err_text, notes)

    op = OPS[step.op]
    if run.op_error is None:
        # What only this op decides (active_adapters' names, plain_model, loss_decreases): bench/ops.
        outcomes += op.own_outcomes(step, run.op_result, state, params)
    outcomes += _evidence_outcomes(params, step, run, evidence, notes)

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
        **kept,
    )


def _call_outcomes(params, step: Step, run: StepRun, err_text: str | None) -> list[Outcome]:
    """The op call itself: it raised what `raises` names, or it succeeded."""
    kf, e = step.known_failures, step.expect
    out: list[Outcome] = []
    if e.raises is not None:
        names = [c.__name__ for c in type(run.op_error).__mro__] if run.op_error else []
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
            )
        )
    return out


def _evidence_outcomes(
    params, step: Step, run: StepRun, evidence: Evidence, notes: list[str]
) -> list[Outcome]:
    """The output against its references: the library reference, the math oracle, the contrast with the previous state."""
    kf, e = step.known_failures, step.expect
    out: list[Outcome] = []
    if evidence.reference_error is not None:
        out.append(
            Outcome(
                expectation="reference",
                expected="a reference built",
                actual=evidence.reference_error,
                held=False,
                status="error",
                message=f"reference could not be built: {evidence.reference_error}",
            )
        )
    agreement = evidence.oracle_agreement
    if agreement is not None:
        diff = "n/a" if agreement.max_abs_diff is None else f"{agreement.max_abs_diff:.3g}"
        out.append(
            outcome(
                "oracles_agree",
                f"<= {agreement.bound:.3g}" if agreement.bound is not None else agreement.rule,
                diff,
                agreement.agree,
                f"the library's reference disagrees with the math: max abs diff {diff} ({agreement.rule})",
                find_known(kf, "oracles_agree", params),
            )
        )
    output = evidence.output
    if output is not None and (e.raises is None or e.matches_reference is not None):
        out.append(_matches(params, step, "matches_reference", output, "output"))
    out += _steady_and_refusal(params, step, run, evidence)
    c = evidence.contrast
    if c is not None:
        # Declared indistinguishable (add_adapter's B = 0): the references must then agree, and the record
        # says this step's output check cannot tell the op from a no-op (a later step must).
        wanted = e.distinguishable if e.distinguishable is not None else True
        out.append(
            outcome(
                "distinguishable",
                f"margin > {c.factor:g}" if wanted else f"margin <= {c.factor:g} (declared)",
                f"margin {c.margin:.3g} (max abs diff {c.max_abs_diff:.3g})",
                c.distinguishable == wanted,
                f"this check cannot tell the states apart: the reference of the new state and of "
                f"{c.previous_state} differ by at most {c.margin:.3g}x the {c.rule} tolerance (needs > "
                f"{c.factor:g}x)"
                if wanted
                else f"declared distinguishable = false, but the references differ by {c.margin:.3g}x the "
                f"{c.rule} tolerance",
                find_known(kf, "distinguishable", params),
            )
        )
        if not wanted and not c.distinguishable:
            notes.append(
                "not distinguishable (declared): this step's output equals the previous state's, so its "
                "output check cannot tell the op from a no-op"
            )
    return out


def _serving_timing(serving: ServingRecord | None) -> TimingStats | None:
    """A serve step's per-request latencies as its timing: what the gate compares between runs."""
    if serving is None or not serving.requests:
        return None
    return TimingStats.from_samples([r.latency_ms for r in serving.requests])


def _output_detail(output: OutputCheck) -> str:
    if output.kind == "tokens":
        return f"{output.mismatched_tokens} of the greedy tokens differ"
    if output.max_abs_diff is None:
        return "output shape differs from the reference"
    return f"max abs diff {output.max_abs_diff:.3g} (tolerance atol {output.atol:g} + rtol {output.rtol:g})"


def _matches(params, step: Step, expectation: str, output: OutputCheck, what: str) -> Outcome:
    """An output against its fresh reference: it must match, unless the step expects it not to."""
    e = step.expect
    wanted = e.matches_reference if e.matches_reference is not None else True
    return outcome(
        expectation,
        str(wanted).lower(),
        str(output.matches).lower(),
        output.matches == wanted,
        f"{what} vs fresh reference ({output.reference_state}): {_output_detail(output)}",
        find_known(step.known_failures, expectation, params),
    )


def _steady_and_refusal(params, step: Step, run: StepRun, evidence: Evidence) -> list[Outcome]:
    """The last timed call against the same reference as the first, and the model after a refused op
    against the previous state's reference."""
    kf = step.known_failures
    out = []
    steady = evidence.steady_output
    if steady is not None:
        out.append(_matches(params, step, "steady_state_matches", steady, "the last timed call"))
    if run.refused and (evidence.output is not None or run.call_error is not None):
        output = evidence.output
        held = run.call_error is None and output.matches
        detail = f"the model call raised {run.call_error}" if run.call_error else _output_detail(output)
        out.append(
            outcome(
                "refusal_leaves_state",
                "the previous state's output",
                "unchanged" if held else "changed",
                held,
                "a refused op must leave the model unchanged: output after the refusal vs the previous "
                f"state's fresh reference ({output.reference_state if output else 'not built'}): {detail}",
                find_known(kf, "refusal_leaves_state", params),
            )
        )
    return out


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
