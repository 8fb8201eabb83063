"""What happened in a step (StepRun, filled by bench.worker.execute) and what its output was checked against
(Evidence, gathered by bench.worker.evidence): the inputs of bench.worker.decide."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.results.measures import OracleAgreement, OutputCheck, StateContrast
from bench.results.serving_records import ServingRecord


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
    unverified: str | None = None  # why an oracle could not check the output ("math oracle: ...")
