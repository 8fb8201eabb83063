"""What a reader must not miss beside a figure: the step's output was wrong, or the case failed in one way or
another. Pure functions of the records; every table and figure asks these, so one rule flags them all.

A step's output is wrong when its checked output did not match the fresh reference, when the last timed call
did not (steady state), or when a serve step answered any checked request wrongly. A step with none of these
checks is "not checked", never "matches".
"""

from __future__ import annotations

from bench.results.failures import WRONG, Failure, failure_of, wrong_output  # noqa: F401  (read as flags.*)
from bench.results.records import CaseResult, StepRecord


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
