"""What "Which to use" reads of one case (bench.report.answers), worked out once per run: its measured steps
with and without the adapter, its swaps and serve step, and what its output claims rest on (a wrong output,
a raise or error, a reference the math oracle disagrees with, no check at all, one oracle only)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.judge.figures import case_peak, is_hotswap, switch_ms
from bench.report import flags
from bench.report.memo import per_results
from bench.results.failures import Failure, unverified_reason
from bench.results.records import CaseResult, Results, StepRecord


def serve_step(case: CaseResult) -> StepRecord | None:
    return next((s for s in case.steps if s.serving is not None and s.serving.figures is not None), None)


def _base_state(step: StepRecord) -> bool:
    """The step was checked against the model with no adapter in effect (disabled, or none loaded)."""
    state = step.output.reference_state if step.output else ""
    return state.endswith("disabled") or state.startswith("no adapters")


def _measured(case: CaseResult) -> tuple[list[StepRecord], list[StepRecord]]:
    """(adapter-active, base) measured model-call steps; a serve step is neither (its requests are), nor a
    forward on its own input shape (`batch_size` / `seq_len` in its args): the figures are the workload's."""
    timed = [
        s
        for s in case.steps
        if s.timing is not None
        and s.serving is None
        and s.timing.n
        and not {"batch_size", "seq_len"} & set(s.args or {})
    ]
    return [s for s in timed if not _base_state(s)], [s for s in timed if _base_state(s)]


@dataclass(frozen=True)
class CaseFacts:
    """What the answers read of one case, worked out once per run: each row asked these of every case two or
    three times, each a walk over its steps: most of the answers' 2.5 s at 20,000 cases."""

    active: tuple[StepRecord, ...]  # measured model-call steps with the adapter in effect (_measured)
    base: tuple[StepRecord, ...]  # ... and without
    swaps: tuple[StepRecord, ...]  # hotswap steps with a switch time
    serve: StepRecord | None  # the serve step with figures
    wrong: str  # the first wrong-output flag of its steps; empty when none
    failure: Failure | None  # flags.failure_of; None where unread (a passing case with a wrong output)
    rss_peak_bytes: int | None
    checked: bool = True  # some step's output was checked against a reference (flags.checked)
    unverified: bool = False  # a pass no pair of oracles verified in some step (StepRecord.unverified)
    disagree: bool = False  # the library reference disagreed with the math oracle (oracles_agree not met)
    errored: bool = False  # the case's verdict is error: a check or the worker could not run

    @property
    def bad(self) -> bool:
        """A wrong output, a raise or an error, or a reference the math oracle disagrees with (an output that
        "matches" it is not known to be right): the row is not usable as it is in this case."""
        raised = self.failure is not None and self.failure.kind in ("raised", "error")
        return bool(self.wrong) or raised or self.errored or self.disagree

    @property
    def bad_kind(self) -> str:
        """How this case makes its row unusable, in a few words ("" when it does not)."""
        if self.wrong:
            return flags.WRONG
        if self.disagree:
            return "oracles disagree"
        if self.failure is not None and self.failure.kind == "raised":
            return "raised"
        return "error" if self.bad else ""


# The expectation whose failure says the library reference is not the math's (bench.engine.math_oracle).
ORACLES_AGREE = "oracles_agree"


def facts_of(case: CaseResult) -> CaseFacts:
    active, base = _measured(case)
    wrong = flags.case_wrong(case) or ""
    outcomes = [o for s in case.steps for o in s.outcomes]
    return CaseFacts(
        checked=any(flags.checked(s) for s in case.steps),
        unverified=unverified_reason(case) is not None,
        disagree=any(o.expectation == ORACLES_AGREE and o.status in ("fail", "xfail") for o in outcomes),
        errored=case.verdict == "error",
        active=tuple(active),
        base=tuple(base),
        swaps=tuple(s for s in case.steps if is_hotswap(s) and switch_ms(s) is not None),
        serve=serve_step(case),
        wrong=wrong,
        failure=flags.failure_of(case) if not wrong or case.verdict != "pass" else None,
        rss_peak_bytes=case_peak(case, "rss_peak_bytes"),
    )


@per_results
def case_facts(results: Results) -> list[CaseFacts]:
    """facts_of each case, in the order of results.cases."""
    return [facts_of(c) for c in results.cases]
