"""Expectations between the cases of one run: a serve step's `faster_than = { reload = 1.0 }` holds when its
median request latency is below factor x the median of the same scenario's `reload` case (same precision and
compile setting). Each case runs in its own process, so this is decided after the run, over its results; a
pure function, applied again when shards are merged (a sibling may have run in another shard).
"""

from __future__ import annotations

from dataclasses import replace

from bench.results.records import CaseResult, StepRecord
from bench.results.verdict import case_verdict, find_known, outcome, step_status
from bench.spec.cases import Case
from bench.spec.host import scope_to_host

EXPECTATION = "faster_than"
_NOTE = "faster_than "


def _serving_p50(case: CaseResult) -> float | None:
    for s in case.steps:
        if s.serving is not None and s.serving.figures is not None:
            return s.serving.figures.latency_ms_p50
    return None


def _sibling(case: CaseResult, strategy: str, cases: tuple[CaseResult, ...]) -> CaseResult | None:
    same = [
        c
        for c in cases
        if c.scenario == case.scenario
        and c.params.get("strategy") == strategy
        and all(c.params.get(k) == case.params.get(k) for k in ("precision", "compile"))
    ]
    if len(same) > 1:  # the hotswap strategy on several paths: the one on this case's path, if any
        same = [c for c in same if c.params.get("hotswap_path") == case.params.get("hotswap_path")]
    return same[0] if len(same) == 1 else None


def relative_outcomes(cases: tuple[CaseResult, ...]) -> tuple[CaseResult, ...]:
    """The cases with their faster_than outcomes (re)decided; cases without one are returned as they are."""
    out = []
    for c in cases:
        wanted = _wanted(c)
        if not wanted or c.verdict in ("error", "skip", "not_run"):
            out.append(c)
            continue
        case = Case.from_dict(c.case)
        # the markers as the worker scoped them to its host (bench.spec.host): the same facts, recorded in the result
        case = replace(case, scenario=scope_to_host(case.scenario, c.host_facts))
        steps = []
        for s in c.steps:
            spec = next((st for st in case.scenario.steps if st.index == s.index), None)
            if spec is None or not spec.expect.faster_than or s.serving is None:
                steps.append(s)
                continue
            steps.append(_decide(c, s, spec, cases))
        verdict, reason = case_verdict(steps, c.scenario_outcomes)
        out.append(replace(c, steps=tuple(steps), verdict=verdict, reason=reason))
    return tuple(out)


def _wanted(c: CaseResult) -> bool:
    if not c.case or not c.params.get("strategy"):
        return False
    steps = c.case.get("scenario", {}).get("steps", [])
    return any((st.get("expect") or {}).get("faster_than") for st in steps)


def _decide(c: CaseResult, s: StepRecord, spec, cases) -> StepRecord:
    outcomes = [o for o in s.outcomes if o.expectation != EXPECTATION]
    notes = [n for n in s.notes if not n.startswith(_NOTE)]
    mine = _serving_p50(c)
    for strategy, factor in spec.expect.faster_than:
        if strategy == c.params.get("strategy"):
            continue  # the expectation is the step's, so every strategy has it: a case is not its own rival
        other = _sibling(c, strategy, cases)
        theirs = _serving_p50(other) if other is not None else None
        if mine is None or theirs is None:
            notes.append(
                f"{_NOTE}{strategy}: not evaluated (no finished {strategy} case of this run to compare)"
            )
            continue
        bound = factor * theirs
        outcomes.append(
            outcome(
                EXPECTATION,
                f"p50 < {factor:g} x {strategy} ({bound:.3g} ms)",
                f"p50 {mine:.3g} ms",
                mine < bound,
                f"median latency {mine:.3g} ms is not below {factor:g} x {other.case_id}'s {theirs:.3g} ms",
                find_known(spec.known_failures, EXPECTATION, c.params),
            )
        )
    return replace(s, outcomes=tuple(outcomes), notes=tuple(notes), status=step_status(outcomes))
