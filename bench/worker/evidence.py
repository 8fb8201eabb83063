"""What a step's output is checked against, gathered after the step ran: the fresh reference's verdict on its
first and last calls, the contrast with the previous state, the peft-free oracle's agreement, the copy floor
of the bytes it moved, and a serve step's responses. Evidence only: bench.worker.decide turns it into outcomes.
"""

from __future__ import annotations

import dataclasses

from bench.engine.footprint import copy_floor_ms
from bench.engine.math_oracle import MathOracle, MathOracleError
from bench.engine.oom import is_out_of_memory
from bench.engine.probes.clock import Clock
from bench.engine.reference import ReferenceOracle
from bench.engine.serving.evidence import serving_record, serving_run_of
from bench.engine.subject import Subject
from bench.errors import BenchInputError, error_text
from bench.ops import OPS
from bench.ops.base import Op
from bench.results.collector import collector_paused
from bench.spec.schema import Step
from bench.spec.state import AdapterState
from bench.worker.facts import Evidence, StepRun
from bench.worker.prepare import Oracles


def gather_evidence(
    step: Step,
    run: StepRun,
    state: AdapterState,
    previous: AdapterState | None,
    oracles: Oracles,
    subject: Subject,
    adapter_bytes: dict[str, int],
    clock: Clock,
) -> Evidence:
    """What the step's output is checked against: the reference's verdict, each new adapter's effect, and the
    copy floor of the bytes it moved. This is where references are loaded and floors are timed.

    The references are built with the cyclic collector paused: each fresh model and load_adapter makes
    thousands of objects and no cycle worth a pass, and each pass they set off walks the whole process
    (the libraries' ~470,000 objects, the subject and its adapters): the 135M-shape hotswap case's references
    2.9 s against 4.2-4.4 s (reports/performance/serving_check.md). The copy floor is timed after, as before."""
    op = OPS[step.op]
    with collector_paused():
        if op.checks_responses:
            return _serving_evidence(run, oracles.reference, oracles.math, subject)
        checked = _against_references(op, run, oracles, subject, state, previous)
    moved_bytes = floor = None
    if op.moves_adapter and run.op_error is None:
        moved_bytes = adapter_bytes.get(step.adapter)
        if moved_bytes:
            floor = copy_floor_ms(moved_bytes, subject.device, clock)
    return dataclasses.replace(checked, adapter_bytes=moved_bytes, copy_floor_ms=floor)


def _against_references(
    op: Op,
    run: StepRun,
    oracles: Oracles,
    subject: Subject,
    state: AdapterState,
    previous: AdapterState | None,
) -> Evidence:
    """The first and last calls of `op`'s step against the fresh reference of `state`, the contrast with
    `previous`, and the library's logic against the math oracle."""
    oracle = oracles.reference
    notes: list[str] = []
    output = agreement = steady = contrast = None
    reference_error = unverified = None
    try:
        if run.first_output is not None and not state.verifiable:
            why = "trained weights exist only in this model (save_adapter, then check)"
            unverified = f"both oracles: {why}"
            notes.append(f"output not checked: {why}")
        elif run.first_output is not None:
            # Tokens where the reference generates (a generate workload) and the call did (not a forward).
            if subject.workload.kind == "generate" and op.call != "forward":
                output = oracle.check_tokens(state, run.first_output, subject.backend)
            else:
                output = oracle.check_logits(state, run.first_output, subject.backend)
            if run.last_output is not None:
                check = oracle.check_tokens if op.call == "generate" else oracle.check_logits
                steady = check(state, run.last_output, subject.backend)
            if previous is not None:
                contrast = oracle.contrast(previous, state, subject.backend)
            try:
                # The library's logic against the math in fp32 (oracles.logic_*), whatever the precision.
                lib, maths = oracles.logic_reference, oracles.logic_math
                agreement = maths.check(state, lib.logits(state))
                if agreement.agree and subject.workload.kind == "generate":
                    agreement = maths.check_generate(state, *lib.generated_outputs(state))
            except (MathOracleError, BenchInputError) as exc:
                # A state or adapter the math cannot express (trained weights, a non-LoRA adapter): said in a
                # note; the library reference's check above still decides matches_reference.
                notes.append(f"math oracle not applied: {exc}")
                unverified = f"math oracle: {exc}"
    except Exception as exc:
        if is_out_of_memory(exc):
            raise  # a fault of the run: the case's error
        # The oracle failed, not the subject: its own outcome (bench.worker.decide), never blamed on the op.
        reference_error = error_text(exc)
    return Evidence(
        output=output,
        contrast=contrast,
        notes=tuple(notes),
        reference_error=reference_error,
        oracle_agreement=agreement,
        steady_output=steady,
        unverified=unverified,
    )


def _serving_evidence(
    run: StepRun, oracle: ReferenceOracle, math_oracle: MathOracle, subject: Subject
) -> Evidence:
    """A serve step: its responses against fresh references, per request (bench.engine.serving.evidence)."""

    served = serving_run_of(run.op_result, run.op_error)
    if served is None:
        return Evidence()
    try:
        return Evidence(serving=serving_record(served, oracle, math_oracle, subject))
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        return Evidence(reference_error=error_text(exc))
