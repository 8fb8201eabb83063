"""What a reader must not miss beside a figure: the step's output was wrong, or the case failed in one way or
another. Pure functions of the records; every table and figure asks these, so one rule flags them all.

A step's output is wrong when its checked output did not match the fresh reference, when the last timed call
did not (steady state), or when a serve step answered any checked request wrongly. A step with none of these
checks is "not checked", never "matches".
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.judge.figures import known_failures_of, output_wrong
from bench.report.memo import per_results
from bench.results.records import CaseResult, StepRecord

WRONG = "WRONG OUTPUT"


def _diff(check) -> str:
    if check.kind == "tokens" and check.mismatched_tokens is not None:
        return f"{check.mismatched_tokens} token(s) differ"
    return "" if check.max_abs_diff is None else f"max abs diff {check.max_abs_diff:.2g}"


def wrong_output(step: StepRecord) -> str | None:
    """Why this step's figures are of a wrong answer, in a few words; None when nothing checked was wrong."""
    if output_wrong(step):
        return f"{WRONG}: did not match the reference ({_diff(step.output)})"
    if step.steady_output is not None and not step.steady_output.matches:
        return f"{WRONG}: the last timed call did not match the reference ({_diff(step.steady_output)})"
    figures = step.serving.figures if step.serving is not None else None
    if figures is not None and figures.wrong_responses:
        return f"{WRONG}: {figures.wrong_responses} of {figures.checked_responses} responses wrong"
    return None


def checked(step: StepRecord) -> bool:
    return step.output is not None or (step.serving is not None and step.serving.figures is not None)


def output_label(step: StepRecord) -> str:
    """The output column of a table: the flag, "matches", or "not checked"."""
    wrong = wrong_output(step)
    if wrong:
        return wrong
    return "matches" if checked(step) else "not checked"


def case_wrong(case: CaseResult) -> str | None:
    """The first wrong-output flag of a case's steps (its figures are of a wrong answer somewhere)."""
    return next((w for s in case.steps if (w := wrong_output(s))), None)


@dataclass(frozen=True)
class Failure:
    """How a case that is not a plain pass went wrong, as a reader tells them apart."""

    kind: str  # "wrong output (silent)" | "raised" | "recompiled" | "error" | ...
    step: StepRecord | None  # the step that decided it, if one did
    known_failure: str  # the scenario's marker: reason [fingerprint: ...]; empty when none matched


def failure_of(case: CaseResult) -> Failure:
    """The failure kind from what the deciding step recorded (its error, its output, its recompiles), not from
    the expectation's name: a silently wrong answer and a refusal read differently."""
    bad = ("fail", "error", "xfail", "xpass")
    step = next((s for s in case.steps if s.status == case.verdict), None) or next(
        (s for s in case.steps if s.status in bad), None
    )
    known = "; ".join(known_failures_of(case))
    if case.verdict in ("skip", "not_run"):
        return Failure(case.verdict, None, known)
    if step is None:  # the worker's own error (a timeout, a crash), or a whole-case expectation
        return Failure("error" if case.verdict == "error" else "whole-case expectation", None, known)
    if step.error:
        return Failure("raised", step, known)
    if wrong_output(step):
        return Failure("wrong output (silent)", step, known)
    if step.compile is not None and step.compile.recompiles:
        return Failure("recompiled", step, known)
    if case.verdict == "xpass":
        return Failure("known failure did not happen (xpass)", step, known)
    return Failure("expectation not met", step, known)


@per_results
def output_labels(results) -> dict[tuple[str, int], str]:
    """(case id, step index) -> output_label, for every step of the run."""
    return {(c.case_id, s.index): output_label(s) for c in results.cases for s in c.steps}
