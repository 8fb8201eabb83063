"""What the report shows about `train` steps: one row per step, and what LoRA saves against full fine-tuning.

Pure functions from Results to frozen records, like bench.report.data. A LoRA case is set against a full
fine-tuning case of the same base model and precision. The results do not name the model, so the base is
identified by its parameter count: every parameter of a full case is trainable, and a LoRA case's frozen
parameters are exactly the base's (its trainable ones are the LoRA weights and modules_to_save copies).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.report.memo import per_results
from bench.results.brief import listing
from bench.results.records import CaseResult, Results, StepRecord

# Peak RSS holds the whole process (Python, torch, the allocator's slack); a saving smaller than this fraction
# of the LoRA case's peak is below what one reading per case can resolve, and the report says so.
RSS_RESOLUTION_FRACTION = 0.05


@dataclass(frozen=True)
class TrainRow:
    case_id: str
    scenario: str
    precision: str
    compile: str
    step: int
    full: bool  # full fine-tuning (every parameter trainable): the baseline
    optimizer_steps: int
    trainable_params: int
    total_params: int
    base_params: int  # the frozen base's parameter count: what pairs a LoRA case with a full one
    grad_bytes: int
    optimizer_state_bytes: int
    rss_peak_bytes: int | None
    rss_unavailable: str  # why the peak is None (empty when measured)
    n: int  # timed optimizer steps
    step_median_ms: float
    step_iqr_ms: float
    step_samples_ms: tuple[float, ...]
    loss_first: float
    loss_last: float

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0

    @property
    def train_state_bytes(self) -> int:
        """Gradients plus optimizer state: the memory training adds on top of the weights."""
        return self.grad_bytes + self.optimizer_state_bytes

    @property
    def kind(self) -> str:
        return "full" if self.full else "LoRA"


@dataclass(frozen=True)
class LoraSaving:
    """A LoRA train step against the full fine-tuning step of the same base and precision."""

    lora: TrainRow
    full: TrainRow
    train_state_saved_bytes: int  # full minus LoRA, gradients + optimizer state
    train_state_ratio: float | None  # full / LoRA
    rss_peak_saved_bytes: int | None  # full minus LoRA; None where either peak is unmeasured
    rss_peak_ratio: float | None
    note: str  # why a figure is missing or cannot be read as the saving


def _is_full(step: StepRecord) -> bool:
    t = step.train
    # Results written before the step args carried `full`: every parameter trainable means full.
    return bool(step.args.get("full", t.trainable_params == t.total_params))


def _row(case: CaseResult, step: StepRecord) -> TrainRow:
    t = step.train
    full = _is_full(step)
    unavailable = ""
    if t.rss_peak_bytes is None:
        reasons = step.memory.unavailable if step.memory else {}
        unavailable = reasons.get("rss_peak_bytes") or next(iter(reasons.values()), "not measured")
    return TrainRow(
        case_id=case.case_id,
        scenario=case.scenario,
        precision=case.params.get("precision", ""),
        compile=case.params.get("compile", ""),
        step=step.index,
        full=full,
        optimizer_steps=t.steps,
        trainable_params=t.trainable_params,
        total_params=t.total_params,
        base_params=t.total_params if full else t.total_params - t.trainable_params,
        grad_bytes=t.grad_bytes,
        optimizer_state_bytes=t.optimizer_state_bytes,
        rss_peak_bytes=t.rss_peak_bytes,
        rss_unavailable=unavailable,
        n=t.step_time.n,
        step_median_ms=t.step_time.median_ms,
        step_iqr_ms=t.step_time.iqr_ms,
        step_samples_ms=t.step_time.samples_ms,
        loss_first=t.loss_first,
        loss_last=t.loss_last,
    )


@per_results
def train_rows(results: Results) -> list[TrainRow]:
    return [_row(c, s) for c in results.cases for s in c.steps if s.train is not None]


def _baseline_for(lora: TrainRow, fulls: dict[tuple, TrainRow]) -> TrainRow | None:
    """`fulls`: the first full fine-tuning row of each (precision, base parameters) and of each (precision,
    base parameters, compile setting). Several baselines of that base and precision: the one with the same
    compile setting, else the first."""
    same = (lora.precision, lora.base_params)
    return fulls.get((*same, lora.compile)) or fulls.get(same)


def _saving(lora: TrainRow, full: TrainRow) -> LoraSaving:
    saved = full.train_state_bytes - lora.train_state_bytes
    rss_saved = rss_ratio = None
    note = ""
    if lora.rss_peak_bytes is None or full.rss_peak_bytes is None:
        note = "peak RSS not measured: " + (lora.rss_unavailable or full.rss_unavailable)
    else:
        rss_saved = full.rss_peak_bytes - lora.rss_peak_bytes
        rss_ratio = full.rss_peak_bytes / lora.rss_peak_bytes
        if abs(saved) < RSS_RESOLUTION_FRACTION * lora.rss_peak_bytes:
            note = (
                f"saving < {RSS_RESOLUTION_FRACTION:.0%} of peak RSS: the RSS difference is the rest of the "
                "process, not the saving"
            )
    return LoraSaving(
        lora=lora,
        full=full,
        train_state_saved_bytes=saved,
        train_state_ratio=(full.train_state_bytes / lora.train_state_bytes)
        if lora.train_state_bytes
        else None,
        rss_peak_saved_bytes=rss_saved,
        rss_peak_ratio=rss_ratio,
        note=note,
    )


def lora_savings(rows: list[TrainRow]) -> list[LoraSaving]:
    # Grouped once: a scan of every full row for each LoRA row was quadratic in the run's train steps.
    fulls: dict[tuple, TrainRow] = {}
    for r in rows:
        if r.full:
            fulls.setdefault((r.precision, r.base_params), r)
            fulls.setdefault((r.precision, r.base_params, r.compile), r)
    out = []
    for r in rows:
        if r.full:
            continue
        base = _baseline_for(r, fulls)
        if base is not None:
            out.append(_saving(r, base))
    return out


def unpaired_notes(rows: list[TrainRow], savings: list[LoraSaving]) -> list[str]:
    """Why a LoRA train step has no saving beside it."""
    lora = [r for r in rows if not r.full]
    if not lora:
        return []
    if not any(r.full for r in rows):
        return [
            "No full fine-tuning case in these results, so no saving is shown: run scenarios/train_full.toml "
            "(same model and workload) beside the LoRA scenarios."
        ]
    paired = {(s.lora.case_id, s.lora.step) for s in savings}
    alone = [r for r in lora if (r.case_id, r.step) not in paired]
    if not alone:
        return []
    return [
        "No full fine-tuning case of the same base model (parameter count) and precision for: "
        + listing(
            [f"{r.case_id} step {r.step} ({r.precision}, {r.base_params:,} base parameters)" for r in alone],
            noun="train steps",
        )
        + "."
    ]
