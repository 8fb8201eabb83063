"""A step's output against its references, as outcomes: the library reference (first and last call), the
refusal check, the math oracle's agreement and the contrast with the previous state (bench.worker.decide)."""

from __future__ import annotations

from bench.results.measures import OutputCheck
from bench.results.records import Outcome
from bench.results.verdict import find_known, outcome
from bench.spec.schema import Step
from bench.worker.facts import Evidence, StepRun


def evidence_outcomes(
    params, step: Step, run: StepRun, evidence: Evidence, notes: list[str]
) -> list[Outcome]:
    """The output against its references: the library reference, the math oracle, the contrast with the previous state."""
    kf, e = step.known_failures, step.expect
    out: list[Outcome] = []
    if evidence.reference_error is not None:
        out.append(
            Outcome(
                expectation="reference",
                expected="a reference built",
                actual=evidence.reference_error,
                held=False,
                status="error",
                message=f"reference could not be built: {evidence.reference_error}",
            )
        )
    agreement = evidence.oracle_agreement
    if agreement is not None:
        diff = "n/a" if agreement.max_abs_diff is None else f"{agreement.max_abs_diff:.3g}"
        out.append(
            outcome(
                "oracles_agree",
                f"<= {agreement.bound:.3g}" if agreement.bound is not None else agreement.rule,
                diff,
                agreement.agree,
                f"the library's reference disagrees with the math: max abs diff {diff} ({agreement.rule})",
                find_known(kf, "oracles_agree", params),
                measured=agreement.max_abs_diff,
            )
        )
    output = evidence.output
    if output is not None and (e.raises is None or e.matches_reference is not None):
        out.append(_matches(params, step, "matches_reference", output, "output"))
    out += _steady_and_refusal(params, step, run, evidence)
    c = evidence.contrast
    if c is not None:
        # Declared indistinguishable (add_adapter's B = 0): the references must then agree, and the record
        # says this step's output check cannot tell the op from a no-op (a later step must).
        wanted = e.distinguishable if e.distinguishable is not None else True
        out.append(
            outcome(
                "distinguishable",
                f"margin > {c.factor:g}" if wanted else f"margin <= {c.factor:g} (declared)",
                f"margin {c.margin:.3g} (max abs diff {c.max_abs_diff:.3g})",
                c.distinguishable == wanted,
                f"this check cannot tell the states apart: the reference of the new state and of "
                f"{c.previous_state} differ by at most {c.margin:.3g}x the {c.rule} tolerance (needs > "
                f"{c.factor:g}x)"
                if wanted
                else f"declared distinguishable = false, but the references differ by {c.margin:.3g}x the "
                f"{c.rule} tolerance",
                find_known(kf, "distinguishable", params),
                measured=c.margin,
            )
        )
        if not wanted and not c.distinguishable:
            notes.append(
                "not distinguishable (declared): this step's output equals the previous state's, so its "
                "output check cannot tell the op from a no-op"
            )
    return out


def _output_measure(output: OutputCheck) -> float | None:
    """What a known failure's band is matched against: the max abs difference of logits, the number of
    greedy tokens that differ for tokens (None where the shapes differ)."""
    return output.mismatched_tokens if output.kind == "tokens" else output.max_abs_diff


def _output_detail(output: OutputCheck) -> str:
    if output.kind == "tokens":
        return f"{output.mismatched_tokens} of the greedy tokens differ"
    if output.max_abs_diff is None:
        return "output shape differs from the reference"
    return f"max abs diff {output.max_abs_diff:.3g} (tolerance atol {output.atol:g} + rtol {output.rtol:g})"


def _matches(params, step: Step, expectation: str, output: OutputCheck, what: str) -> Outcome:
    """An output against its fresh reference: it must match, unless the step expects it not to."""
    e = step.expect
    wanted = e.matches_reference if e.matches_reference is not None else True
    return outcome(
        expectation,
        str(wanted).lower(),
        str(output.matches).lower(),
        output.matches == wanted,
        f"{what} vs fresh reference ({output.reference_state}): {_output_detail(output)}",
        find_known(step.known_failures, expectation, params),
        measured=_output_measure(output),
    )


def _steady_and_refusal(params, step: Step, run: StepRun, evidence: Evidence) -> list[Outcome]:
    """The last timed call against the same reference as the first, and the model after a refused op
    against the previous state's reference."""
    kf = step.known_failures
    out = []
    steady = evidence.steady_output
    if steady is not None:
        out.append(_matches(params, step, "steady_state_matches", steady, "the last timed call"))
    if run.refused and (evidence.output is not None or run.call_error is not None):
        output = evidence.output
        held = run.call_error is None and output.matches
        detail = f"the model call raised {run.call_error}" if run.call_error else _output_detail(output)
        out.append(
            outcome(
                "refusal_leaves_state",
                "the previous state's output",
                "unchanged" if held else "changed",
                held,
                "a refused op must leave the model unchanged: output after the refusal vs the previous "
                f"state's fresh reference ({output.reference_state if output else 'not built'}): {detail}",
                find_known(kf, "refusal_leaves_state", params),
                measured=_output_measure(output) if output is not None else None,
            )
        )
    return out
