"""How a case that is not a plain pass went wrong, and whether a step's output was: pure functions of the
records. In the results layer because a save records each case's failure line in the columnar copy (a merge
copies it instead of building the record: bench.results.streaming), and compare, gate and the report ask the
same questions (bench.judge, bench.report.flags).

A step's output is wrong when its checked output did not match the fresh reference, when the last timed call
did not (steady state), or when a serve step answered any checked request wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.results.brief import clipped, code_span, md_text
from bench.results.records import CaseResult, StepRecord


def output_wrong(step: StepRecord) -> bool:
    """The step's checked output did not match its reference: its timings are of a wrong answer."""
    return step.output is not None and not step.output.matches


def known_failures_of(case: CaseResult | None) -> tuple[str, ...]:
    """The known failures (reason and fingerprint, as recorded) that the case's xfail outcomes matched."""
    if case is None:
        return ()
    outcomes = [o for s in case.steps for o in s.outcomes] + list(case.scenario_outcomes)
    return tuple(sorted({o.known_failure for o in outcomes if o.status == "xfail" and o.known_failure}))


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


@dataclass(frozen=True)
class Failure:
    """How a case that is not a plain pass went wrong, as a reader tells them apart."""

    kind: str  # "wrong output (silent)" | "raised" | "recompiled" | "error" | ...
    step: StepRecord | None  # the step that decided it, if one did
    known_failure: str  # the scenario's marker: reason [fingerprint: ...]; empty when none matched


def failure_of(case: CaseResult) -> Failure:
    """The failure kind from what the deciding step recorded (its error, its output, its recompiles), not from
    the expectation's name: a silently wrong answer and a refusal read differently. The deciding step: the
    first whose status is the case's verdict and that raised, else the first with that status, else the first
    that did not pass. A case in error is never "expectation not met": it raised at a step, or the worker or a
    check could not run (its reason says which)."""
    bad = ("fail", "error", "xfail", "xpass")
    same = [s for s in case.steps if s.status == case.verdict]
    step = (
        next((s for s in same if s.error), None)
        or (same[0] if same else None)
        or next((s for s in case.steps if s.status in bad), None)
    )
    known = "; ".join(known_failures_of(case))
    if case.verdict in ("skip", "not_run"):
        return Failure(case.verdict, None, known)
    if case.verdict == "error":
        raised = step if step is not None and step.error else next((s for s in case.steps if s.error), None)
        return Failure("raised", raised, known) if raised is not None else Failure("error", step, known)
    if step is None:  # a whole-case expectation
        return Failure("whole-case expectation", None, known)
    if step.error:
        return Failure("raised", step, known)
    if wrong_output(step):
        return Failure("wrong output (silent)", step, known)
    if step.compile is not None and step.compile.recompiles:
        return Failure("recompiled", step, known)
    if case.verdict == "xpass":
        return Failure("known failure did not happen (xpass)", step, known)
    return Failure("expectation not met", step, known)


def unverified_reason(case: CaseResult) -> str | None:
    """Why a passing case is an unverified pass (the first step no pair of oracles verified), or None."""
    if case.verdict != "pass":
        return None
    return next((f"step {s.index} ({s.op}): {s.unverified}" for s in case.steps if s.unverified), None)


def failure_line(case: CaseResult) -> str:
    """The case's line in a summary's "Not a plain pass" list: its verdict, how it went wrong and the known
    failure its marker matched; for an unverified pass, why an oracle did not verify it; "" for a plain pass."""
    if case.verdict == "pass":
        why = unverified_reason(case)
        return f"- {code_span(case.case_id)} pass (unverified): {one_line(why, 160)}" if why else ""
    f = failure_of(case)
    known = f"; known failure: {one_line(f.known_failure, 500)}" if f.known_failure else ""
    kind = f.kind
    # The worker's error, a skip's or an unfinished case's reason says what ("error: error" did not).
    if kind in ("error", "skip", "not_run") and case.reason:
        kind = one_line(case.reason, 160)
    return f"- {code_span(case.case_id)} {case.verdict}: {kind}{known}"


def one_line(text: str, limit: int) -> str:
    """`text` clipped, on one line (a newline in a reason would end a Markdown list item or table row), its
    markup shown as written (md_text)."""
    return md_text(clipped(" ".join(text.split()), limit))
