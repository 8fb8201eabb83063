"""Decisions as pure functions: an expectation's outcome, a step's status, a case's verdict.

Known failures work like pytest's strict xfail: a known failure that does not happen is an `xpass`, which
fails the run, so the marker is removed when upstream fixes the bug.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.results.records import Outcome, StepRecord
from bench.spec.schema import KnownFailure

_SEVERITY = {"pass": 0, "skip": 0, "xfail": 1, "not_run": 1, "xpass": 2, "fail": 3, "error": 4}


def outcome(
    expectation: str,
    expected: str,
    actual: str,
    held: bool,
    message: str,
    known: KnownFailure | None,
    *,
    measured: float | None = None,
    error_types: tuple[str, ...] = (),
) -> Outcome:
    """`measured` and `error_types` are what a known failure's fingerprint is matched against: the value the
    expectation measured (an output's max abs difference, a count) and the MRO names of what was raised."""
    if known is None:
        status = "pass" if held else "fail"
    else:
        status = "xpass" if held else "xfail"
    if status == "xpass":
        message = f"expected to fail ({known.reason}) but held: remove the known_failure marker"
    elif status == "xfail" and (why := known.mismatch(message, measured, error_types)) is not None:
        # Not the known bug: a different failure of the same expectation is a plain failure.
        status = "fail"
        message = f"the known failure's signature does not match: {why} ({known.fingerprint}); {message}"
    return Outcome(
        expectation=expectation,
        expected=expected,
        actual=actual,
        held=held,
        status=status,
        message=message if status != "pass" else "",
        known_failure=_known_text(known) if status in ("xfail", "xpass") else None,
    )


def _known_text(known: KnownFailure) -> str:
    """The marker as recorded with the outcome: its reason and, where it has one, its fingerprint (compare and
    gate read a changed fingerprint as a changed known failure)."""
    return f"{known.reason} [fingerprint: {known.fingerprint}]" if known.fingerprinted else known.reason


def find_known(
    known_failures: Iterable[KnownFailure], expectation: str, params: dict[str, str]
) -> KnownFailure | None:
    return next((k for k in known_failures if k.expectation == expectation and k.applies(params)), None)


def worst(statuses: Iterable[str]) -> str:
    statuses = list(statuses)
    return max(statuses, key=lambda s: _SEVERITY[s]) if statuses else "pass"


def step_status(outcomes: Iterable[Outcome]) -> str:
    return worst(o.status for o in outcomes)


def case_verdict(steps: Iterable[StepRecord], scenario_outcomes: Iterable[Outcome]) -> tuple[str, str]:
    """(verdict, one-line reason). The reason names the step, the expectation and the difference."""
    steps = list(steps)
    scenario_outcomes = list(scenario_outcomes)
    ran = [s for s in steps if s.status != "not_run"]
    verdict = worst([s.status for s in ran] + [o.status for o in scenario_outcomes])
    if verdict == "not_run":
        verdict = "xfail"
    if verdict == "pass":
        unverified = [s for s in ran if s.unverified]
        if unverified:  # never a plain pass: say which step no oracle pair verified, and why
            s = unverified[0]
            more = f" (and {len(unverified) - 1} more step(s))" if len(unverified) > 1 else ""
            return "pass", f"unverified: step {s.index} ({s.op}): {s.unverified}{more}"
        return "pass", ""
    for s in steps:
        if s.status == verdict:
            o = next((o for o in s.outcomes if o.status == verdict), None)
            detail = f"{o.expectation}: {o.message}" if o else (s.error or "")
            return verdict, f"step {s.index} ({s.op}): {detail}"
    o = next(o for o in scenario_outcomes if o.status == verdict)
    return verdict, f"scenario: {o.expectation}: {o.message}"


def exit_code(verdicts: Iterable[str]) -> int:
    """0 when every expectation holds or is a known failure; 1 when any case fails, errors or xpasses."""
    return 1 if any(v in ("fail", "error", "xpass") for v in verdicts) else 0
