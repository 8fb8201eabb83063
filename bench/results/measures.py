"""What one step measured: timings, dynamo's work, memory, the output check and its references, training
and repeated loads. Frozen dataclasses, units in the field names; bench.results.records composes them into a
StepRecord and re-exports them (docs/results-schema.md).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


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
    # Inductor CUDA graphs (mode "reduce-overhead"; bench.engine.probes.cudagraphs): graphs recorded and
    # skipped during the step. None when the case records no CUDA graph; with the reason in
    # cuda_graph_unavailable when it would, but this machine cannot (no CUDA device).
    cuda_graph_recordings: int | None = None
    cuda_graph_skips: int | None = None
    cuda_graph_unavailable: str | None = None


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
    # Which rule set atol / rtol (bench.spec.precision.tolerance_for): "exact" (eager-family backend, same
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
    # step and after the last (bench.engine.train.LOSS_MARGIN_REL). None in files written before them.
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
    max |library - math| <= rtol * max(1, max |math|) on the logits (bench.engine.math_oracle.ORACLE_RTOL)."""

    agree: bool
    max_abs_diff: float | None
    scale: float | None  # max(1, max |math logits|)
    bound: float | None  # rtol * scale
    rtol: float
    rule: str
