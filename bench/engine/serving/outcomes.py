"""A serve step's own outcomes, decided from its ServingRecord. Pure, like bench.worker.decide."""

from __future__ import annotations

from bench.results.records import Outcome
from bench.results.serving_records import ServingRecord
from bench.results.verdict import find_known, outcome
from bench.spec.counts import CountBound
from bench.spec.precision import DISTINGUISH_FACTOR
from bench.spec.schema import Step


def serving_outcomes(params: dict[str, str], step: Step, sv: ServingRecord, compiled: bool) -> list[Outcome]:
    """wrong_responses (implicit == 0), distinguishable (every two served adapters), recompiles_after_warmup
    (when expected), oracles_agree per adapter."""
    kf = step.known_failures
    e = step.expect
    out = []
    if sv.figures is not None:
        wanted = e.wrong_responses or CountBound("==", 0)
        wrong = [r for r in sv.requests if r.matches is False]
        listed = ", ".join(
            f"request {r.id} ({r.adapter}"
            + (f", {r.mismatched_tokens} tokens differ" if r.mismatched_tokens else "")
            + (f", max abs diff {r.max_abs_diff:.3g})" if r.max_abs_diff is not None else ")")
            for r in wrong[:8]
        )
        more = f" and {len(wrong) - 8} more" if len(wrong) > 8 else ""
        out.append(
            outcome(
                "wrong_responses",
                str(wanted),
                str(len(wrong)),
                wanted.holds(len(wrong)),
                f"{len(wrong)} of {sv.figures.checked_responses} checked responses differ from their adapter's "
                f"fresh reference: {listed}{more}",
                find_known(kf, "wrong_responses", params),
                measured=len(wrong),
            )
        )
        if sv.adapter_margins:
            out.append(_distinguishable(params, step, sv))
        if e.recompiles_after_warmup is not None and compiled:
            n = sv.figures.recompiles_after_warmup
            out.append(
                outcome(
                    "recompiles_after_warmup",
                    str(e.recompiles_after_warmup),
                    str(n),
                    e.recompiles_after_warmup.holds(n),
                    f"{n} recompile(s) after warm-up, expected {e.recompiles_after_warmup} (first at request "
                    f"{next((r.id for r in sv.requests if not r.warmup and r.recompiles), '-')})",
                    find_known(kf, "recompiles_after_warmup", params),
                    measured=n,
                )
            )
    if sv.oracle_agreement:
        bad = {k: a for k, a in sv.oracle_agreement.items() if not a.agree}
        worst = max((a.max_abs_diff or 0.0) for a in sv.oracle_agreement.values())
        on = ", ".join(map(str, sv.oracle_prompts)) or "0"
        out.append(
            outcome(
                "oracles_agree",
                f"every adapter, on prompt(s) {on}",
                f"{len(sv.oracle_agreement) - len(bad)} of {len(sv.oracle_agreement)} agree",
                not bad,
                "the library's reference disagrees with the math for "
                + ", ".join(f"{k} (max abs diff {a.max_abs_diff})" for k, a in sorted(bad.items()))
                + f"; worst {worst:.3g}",
                find_known(kf, "oracles_agree", params),
            )
        )
    return out


def _distinguishable(params: dict[str, str], step: Step, sv: ServingRecord) -> Outcome:
    """Every two served adapters' fresh references differ by more than DISTINGUISH_FACTOR x the response
    check's bound on each checked prompt: otherwise a server that never switched would pass wrong_responses."""
    worst_pair, worst = min(sv.adapter_margins.items(), key=lambda kv: kv[1])
    close = {k: m for k, m in sv.adapter_margins.items() if not m > DISTINGUISH_FACTOR}
    on = ", ".join(map(str, sv.oracle_prompts))
    return outcome(
        "distinguishable",
        f"every two adapters > {DISTINGUISH_FACTOR:g}x the check's bound",
        f"smallest margin {worst:.3g} ({worst_pair})",
        not close,
        "cannot tell adapters apart: "
        + ", ".join(f"{k} (margin {m:.3g})" for k, m in sorted(close.items()))
        + f" on prompt(s) {on}: their fresh references differ by no more than {DISTINGUISH_FACTOR:g}x the "
        "response check's bound, so a server answering one with the other passes wrong_responses",
        find_known(step.known_failures, "distinguishable", params),
        measured=worst,
    )
