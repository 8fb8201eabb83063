"""The records a run produces, from one timed call up to a whole results file.

Frozen dataclasses with an explicit schema; `to_dict` / `from_dict` give the JSON round trip (see
docs/results-schema.md). Units are in the field names. A figure that could not be measured here is None and
its reason is in the record's `unavailable` map: never a made-up 0.
"""

from __future__ import annotations

import dataclasses
import enum
import statistics
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class Verdict(enum.StrEnum):
    """A case's verdict. A str, so JSON, CSV and comparisons with the plain names keep working."""

    PASS = "pass"
    FAIL = "fail"  # an expectation does not hold
    XFAIL = "xfail"  # a known upstream failure happened, as marked
    XPASS = "xpass"  # a known failure did not happen: the marker is stale (fails the run)
    ERROR = "error"  # the case could not be decided: a worker fault, a bad source, no reference
    SKIP = "skip"  # cannot run here (e.g. bitsandbytes missing), with the reason
    NOT_RUN = "not_run"  # interrupted or pending


VERDICTS = tuple(v.value for v in Verdict)
FAILING_VERDICTS = (Verdict.FAIL, Verdict.XPASS, Verdict.ERROR)


@dataclass(frozen=True)
class TimingStats:
    """Repeated calls of one operation, in milliseconds."""

    n: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    max_ms: float
    stdev_ms: float
    iqr_ms: float
    total_s: float
    samples_ms: tuple[float, ...]

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> TimingStats:
        s = sorted(samples_ms)
        n = len(s)
        q = statistics.quantiles(s, n=10, method="inclusive") if n >= 2 else [s[0]] * 9
        quart = statistics.quantiles(s, n=4, method="inclusive") if n >= 2 else [s[0]] * 3
        return cls(
            n=n,
            min_ms=s[0],
            median_ms=statistics.median(s),
            mean_ms=statistics.fmean(s),
            p90_ms=q[8],
            max_ms=s[-1],
            stdev_ms=statistics.stdev(s) if n >= 2 else 0.0,
            iqr_ms=quart[2] - quart[0],
            total_s=sum(s) / 1000.0,
            samples_ms=tuple(samples_ms),
        )

    @property
    def iqr_over_median(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms else 0.0


@dataclass(frozen=True)
class CompileStats:
    """Dynamo's work during one step: counted without raising (unless the step was strict)."""

    recompiles: int
    frame_compiles: int
    graph_breaks: int
    unique_graphs: int
    recompile_reasons: tuple[str, ...] = ()
    graph_break_reasons: tuple[str, ...] = ()
    compile_time_s: float = 0.0


@dataclass(frozen=True)
class MemoryStats:
    """Memory around one step. Bytes. None + an `unavailable` entry where this machine cannot measure it."""

    rss_before_bytes: int | None
    rss_after_bytes: int | None
    rss_peak_bytes: int | None  # high-water mark since the step began (VmHWM reset through clear_refs)
    cuda_allocated_before_bytes: int | None = None
    cuda_allocated_after_bytes: int | None = None
    cuda_allocated_peak_bytes: int | None = None
    cuda_reserved_after_bytes: int | None = None
    cuda_reserved_peak_bytes: int | None = None
    nvml_process_used_bytes: int | None = None
    nvml_device_used_bytes: int | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def rss_delta_bytes(self) -> int | None:
        if self.rss_before_bytes is None or self.rss_after_bytes is None:
            return None
        return self.rss_after_bytes - self.rss_before_bytes


@dataclass(frozen=True)
class OutputCheck:
    """The model's output after a state change, against an eager reference on a freshly loaded model."""

    reference_state: str  # e.g. "default=b16 active=[default] enabled"
    kind: str  # "logits" | "tokens"
    max_abs_diff: float | None
    max_rel_diff: float | None
    atol: float
    rtol: float
    matches: bool
    tokens_equal: bool | None = None
    mismatched_tokens: int | None = None
    # Which rule set atol / rtol (bench.precision.tolerance_for): "exact" (eager-family backend, same
    # kernels as the reference) or "loose" (inductor, quantized kernels off CPU); None in older files.
    rule: str | None = None
    rule_reason: str | None = None


@dataclass(frozen=True)
class TrainStats:
    """A `train` step: real optimizer steps on synthetic token batches (own loop, AdamW)."""

    steps: int
    step_time: TimingStats  # forward + backward + optimizer step, per step
    loss_first: float  # the running loss of the first step (its batch, with dropout)
    loss_last: float  # ... and of the last step (another batch): shown, not judged
    trainable_params: int
    total_params: int
    grad_bytes: int  # gradients held after the last step
    optimizer_state_bytes: int  # AdamW moments
    rss_peak_bytes: int | None  # high-water mark over the whole step (also in memory.rss_peak_bytes)
    # The judged figures: the loss on one fixed batch, eval mode, no gradients, before the first optimizer
    # step and after the last (bench.worker.train.LOSS_MARGIN_REL). None in files written before them.
    fixed_batch_loss_before: float | None = None
    fixed_batch_loss_after: float | None = None


@dataclass(frozen=True)
class RepeatStats:
    """A `repeat_load` step: memory after each repetition; a leak shows as a slope."""

    mode: str
    count: int
    op_time_ms: tuple[float, ...]
    rss_after_bytes: tuple[int, ...]
    rss_growth_bytes_per_rep: float  # least-squares slope of rss_after_bytes over the repetition index
    cuda_allocated_after_bytes: tuple[int, ...] | None = None
    cuda_growth_bytes_per_rep: float | None = None
    adapter_bytes_per_rep: int | None = None  # for scale: the weights one repetition loads


@dataclass(frozen=True)
class AdapterEffect:
    """How far an adapter moves the output from the base model's (reference vs base, eager)."""

    adapter: str
    max_abs_effect: float
    threshold: float
    measurable: bool


@dataclass(frozen=True)
class StateContrast:
    """Can the output check tell this step's new state from the previous one? Both references (eager, fresh
    models), compared with the step's own tolerance rule: margin = max over the logits of
    |new - previous| / (atol + rtol * |new|); distinguishable when margin > factor."""

    previous_state: str
    max_abs_diff: float
    margin: float
    factor: float
    distinguishable: bool
    rule: str  # the tolerance rule (exact / loose) the margin is measured in


@dataclass(frozen=True)
class OracleAgreement:
    """The two references of a step: the library's (a fresh model, same API calls as the subject) and the math
    oracle's (W + scaling * B @ A computed from the adapter files, no peft code). Rule:
    max |library - math| <= rtol * max(1, max |math|) on the logits (bench.worker.math_oracle.ORACLE_RTOL)."""

    agree: bool
    max_abs_diff: float | None
    scale: float | None  # max(1, max |math logits|)
    bound: float | None  # rtol * scale
    rtol: float
    rule: str


@dataclass(frozen=True)
class Outcome:
    """One expectation of one step, decided."""

    expectation: str
    expected: str
    actual: str
    held: bool
    status: str  # pass | fail | xfail | xpass; error: the check itself could not be made (no reference)
    message: str = ""
    known_failure: str | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One request of the stream, as it was served and checked."""

    id: int
    adapter: str
    prompt: int  # index into the stream's prompt pool
    batch: int  # index of the batch (model call) that served it
    arrival_ms: float
    start_ms: float  # when its batch began (switch included)
    finish_ms: float
    latency_ms: float  # finish - arrival: queueing + switch + model call
    switch_ms: float  # the batch's adapter switch (0 when the slot already held it)
    call_ms: float  # the batch's model call
    switched: bool
    warmup: bool  # the first requests, and each adapter's first: recompiles there are expected
    recompiles: int  # recompiles during its batch (a batch's count is on each of its requests)
    frame_compiles: int
    rss_after_bytes: int | None
    cuda_allocated_after_bytes: int | None = None
    checked: bool = False
    matches: bool | None = None  # None: not checked
    max_abs_diff: float | None = None
    mismatched_tokens: int | None = None


@dataclass(frozen=True)
class ServingFigures:
    """One strategy over one stream: what a serving engineer compares."""

    requests: int
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_max: float
    latency_ms_mean: float
    # The same without warm-up requests (the first ones and each adapter's first): steady-state serving.
    warm_latency_ms_p50: float | None
    warm_latency_ms_p99: float | None
    makespan_s: float  # virtual time from the first arrival to the last finish
    throughput_rps: float | None  # None when the makespan is 0 (one instant request)
    tokens_per_s: float | None  # prompt tokens (forward) or new tokens (generate) per second of makespan
    switches: int
    switch_ms_total: float
    setup_ms: float  # loading the adapters and compiling, before the first request
    recompiles_total: int
    recompiles_after_warmup: int
    frame_compiles_total: int
    rss_peak_bytes: int | None
    rss_growth_bytes_per_request: float | None  # least-squares slope of rss_after over the request index
    cuda_allocated_peak_bytes: int | None
    checked_responses: int
    wrong_responses: int


@dataclass(frozen=True)
class ServingRecord:
    strategy: str
    hotswap_path: str | None  # the hotswap strategy's path; None for the others
    adapters: tuple[str, ...]
    arrival: str
    figures: ServingFigures | None  # None when no request was served (the strategy failed in setup)
    requests: tuple[RequestRecord, ...]
    check_rule: str  # how responses were compared (tolerance, tokens)
    # The library reference against the math oracle, per served adapter (first prompt).
    oracle_agreement: dict[str, OracleAgreement] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # figures not measurable here, with the reason
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepRecord:
    index: int
    op: str
    args: dict[str, Any]
    status: str  # pass | fail | xfail | xpass | error | not_run
    strict: bool  # ran under error_on_recompile=True
    op_time_ms: float | None  # the API call itself (the swap, the toggle, the compile wrap)
    first_call_ms: float | None  # the first model call after the op: carries any compile or recompile
    timing: TimingStats | None  # warm repeated calls (forward/generate steps)
    compile: CompileStats | None
    memory: MemoryStats | None
    output: OutputCheck | None
    effects: tuple[AdapterEffect, ...] = ()  # files written before `contrast` replaced it; empty now
    # The new state's reference against the previous state's (docs/verdicts.md, distinguishability).
    contrast: StateContrast | None = None
    outcomes: tuple[Outcome, ...] = ()
    error: str | None = None  # exception raised by the op, "Type: message"
    # The RecompileError torch raised under error_on_recompile=True (strict steps), its own text: the proof
    # that the guard fired, kept apart from the counted recompile reasons so it cannot be confused with them.
    recompile_error: str | None = None
    notes: tuple[str, ...] = ()  # things the harness did that change what was measured (e.g. a warm-up call)
    # Bytes of adapter weights this step moved (loads and swaps), and the plain tensor-copy floor for them.
    adapter_bytes: int | None = None
    copy_floor_ms: float | None = None
    # The library reference against the math oracle, for the state this step's output was checked against.
    oracle_agreement: OracleAgreement | None = None
    # The last timed call of a forward/generate step against the same reference as the first call.
    steady_output: OutputCheck | None = None
    train: TrainStats | None = None
    repeat: RepeatStats | None = None
    serving: ServingRecord | None = None  # serve steps (bench/serving)


@dataclass(frozen=True)
class Footprint:
    """Static memory of the loaded model."""

    param_bytes: int
    buffer_bytes: int
    memory_footprint_bytes: int  # model.get_memory_footprint()
    quant_state_bytes: int  # bitsandbytes quantisation state that get_memory_footprint leaves out
    adapter_bytes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    scenario: str
    scenario_file: str
    params: dict[str, str]
    verdict: Verdict
    reason: str  # one line: why it is not a pass (empty for pass)
    steps: tuple[StepRecord, ...] = ()
    phases_s: dict[str, float] = field(default_factory=dict)  # where the case's wall time went
    footprint: Footprint | None = None
    device: str = "cpu"
    total_recompiles: int | None = None
    total_graph_breaks: int | None = None
    scenario_outcomes: tuple[Outcome, ...] = ()
    worker: dict[str, Any] = field(default_factory=dict)  # pid, exit code, signal, cpu seconds, stderr tail
    timing_policy: dict[str, Any] = field(default_factory=dict)
    harness: dict[str, Any] = field(
        default_factory=dict
    )  # the scenario's [harness] options the case ran with
    started_at: str = ""
    wall_s: float | None = None
    # The expanded case the worker was handed (bench.cases.Case.to_dict): report, repro, merge and --resume
    # read it from here, so a results folder is self-contained. Empty in files written before it existed.
    case: dict[str, Any] = field(default_factory=dict)
    # Values that were NaN or infinite, written as null: {path in this record: "nan" | "inf" | "-inf"}
    # (bench.finite; the worker's file carries them here).
    non_finite: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every path that builds a CaseResult passes a known verdict; an unknown one (a hand-edited results
        # file) is refused here rather than read as "not failing" by a gate.
        object.__setattr__(self, "verdict", Verdict(self.verdict))


@dataclass(frozen=True)
class Environment:
    python: str
    platform: str
    cpu: str
    cpu_count: int
    device: str
    gpu: str | None
    libraries: dict[str, str | None]
    suite_version: str
    git_commit: str | None
    hostname: str
    # torch intra-op threads (OMP_NUM_THREADS): timings with different counts are not comparable
    torch_threads: int | None = None


@dataclass(frozen=True)
class Results:
    schema_version: int
    suite_version: str
    created_at: str
    environment: Environment
    scenario_set: tuple[str, ...]  # scenario names the run selected (for merge and compare)
    cases: tuple[CaseResult, ...]
    command: tuple[str, ...] = ()
    shard: str | None = None
    parent_cpu_s: float | None = None  # the parent's own CPU time while cases ran
    interrupted: bool = False
    non_finite: dict[str, str] = field(default_factory=dict)  # as CaseResult.non_finite, paths in the file


# ---------------------------------------------------------------------------------------------------------
# JSON round trip


def to_dict(record: Any) -> Any:
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_dict(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, (list, tuple)):
        return [to_dict(x) for x in record]
    if isinstance(record, dict):
        return {str(k): to_dict(v) for k, v in record.items()}
    return record


def from_dict(cls: type[T], data: Any) -> T:
    """Build `cls` from JSON data, converting nested records and tuples by the type hints."""
    return _convert(cls, data)


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{tp.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
        return tp(**{k: _convert(hints[k], v) for k, v in value.items()})
    if origin is tuple:
        args = typing.get_args(tp)
        if args and args[-1] is not Ellipsis:  # a fixed-length tuple such as tuple[str, int]: by position
            if len(args) != len(value):
                raise ValueError(f"expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v) for a, v in zip(args, value, strict=True))
        inner = args[0] if args else Any
        return tuple(_convert(inner, v) for v in value)
    if origin is dict:
        _, vt = typing.get_args(tp)
        return {k: _convert(vt, v) for k, v in value.items()}
    if tp is float and isinstance(value, int):
        return float(value)
    return value
