"""Expectations between the cases of one run: a serve step's `faster_than = { reload = 1.0 }` holds when the
ratio of its median request latency to the median of the same scenario's `reload` case (same precision and
compile setting) is below the factor with 95 % confidence: the upper end of a seeded percentile bootstrap CI
of that ratio over the two cases' per-request latencies lies below the factor. Above it with 95 % confidence
(the lower end at or above the factor) it fails; a CI that contains the factor is not decided (a note, never a
pass), nor is one over fewer than MIN_SAMPLES requests on either side, or one that is not finite
(bench.results.stats). Two cases that ran at the same time (their workers' recorded intervals overlap, or,
where a file lacks them, the run had --jobs > 1) are compared only when their recorded cores are disjoint, and
the outcome says so; on shared or unknown cores, or on two machines, the step notes why it is not decided.
Each case runs in its own process, so this is decided after the run, over its results; a pure function,
applied again when shards are merged (a sibling may have run in another shard).
"""

from __future__ import annotations

from dataclasses import replace

from bench.results.records import CaseResult, StepRecord, WorkerInfo
from bench.results.stats import MIN_SAMPLES, median_ratio_interval
from bench.results.verdict import case_verdict, find_known, outcome, step_status
from bench.spec.cases import Case
from bench.spec.host import scope_to_host

EXPECTATION = "faster_than"
_NOTE = "faster_than "
CONFIDENCE = 0.95
RESAMPLES = 4000
SEED = 0  # the bootstrap is seeded: every save of results.json decides the same


def _latencies(case: CaseResult) -> list[float] | None:
    """The serve step's per-request latencies (the repeated measurements the ratio is bootstrapped over)."""
    for s in case.steps:
        if s.serving is not None and s.serving.figures is not None:
            return [r.latency_ms for r in s.serving.requests]
    return None


def ratio_ci(mine: list[float], theirs: list[float]) -> tuple[float, float, float] | None:
    """median(mine) / median(theirs) and its CONFIDENCE percentile-bootstrap interval (each sample resampled
    on its own, RESAMPLES times, seeded); None where bench.results.stats.median_ratio_interval gives none (fewer
    than MIN_SAMPLES requests on a side, a median of 0, a value or an interval that is not finite)."""
    return median_ratio_interval(mine, theirs, confidence=CONFIDENCE, resamples=RESAMPLES, seed=SEED)


def _interval(w: WorkerInfo) -> tuple[float, float] | None:
    if w.finished_at_epoch_s is None or w.wall_s is None:
        return None
    return w.finished_at_epoch_s - w.wall_s, w.finished_at_epoch_s


def side_by_side(a: CaseResult, b: CaseResult, jobs: int) -> tuple[bool, str]:
    """(comparable, how they ran): two cases' timings are compared when they ran one after the other, or at
    the same time on disjoint recorded cores of one machine."""
    wa, wb = a.worker, b.worker
    if wa.hostname and wb.hostname and wa.hostname != wb.hostname:
        return False, f"ran on two machines ({wa.hostname}, {wb.hostname})"
    ia, ib = _interval(wa), _interval(wb)
    together = ia[0] < ib[1] and ib[0] < ia[1] if ia and ib else jobs > 1
    if not together:
        return True, ""
    where = f"ran side by side (--jobs {jobs})" if jobs > 1 else "ran side by side"
    if wa.cpus and wb.cpus and not set(wa.cpus) & set(wb.cpus):
        return True, f"{where} on disjoint cores {list(wa.cpus)} and {list(wb.cpus)}"
    cores = f"cores {list(wa.cpus)} and {list(wb.cpus)}" if wa.cpus and wb.cpus else "cores not recorded"
    return False, f"{where} on shared or unknown cores ({cores}): one measured the other"


def _sibling_key(c: CaseResult, strategy: str | None) -> tuple:
    return (c.scenario, strategy, c.params.get("precision"), c.params.get("compile"))


def sibling_index(cases: tuple[CaseResult, ...]) -> dict[tuple, list[CaseResult]]:
    """The cases by scenario, strategy, precision and compile: built once, so that finding each case's
    siblings is a look-up rather than a scan of the run per case (quadratic in its size)."""
    index: dict[tuple, list[CaseResult]] = {}
    for c in cases:
        index.setdefault(_sibling_key(c, c.params.get("strategy")), []).append(c)
    return index


def _sibling(case: CaseResult, strategy: str, index: dict[tuple, list[CaseResult]]) -> CaseResult | None:
    same = index.get(_sibling_key(case, strategy), [])
    if len(same) > 1:  # the hotswap strategy on several paths: the one on this case's path, if any
        same = [c for c in same if c.params.get("hotswap_path") == case.params.get("hotswap_path")]
    return same[0] if len(same) == 1 else None


def relative_outcomes(cases: tuple[CaseResult, ...], jobs: int = 1) -> tuple[CaseResult, ...]:
    """The cases with their faster_than outcomes (re)decided; cases without one are returned as they are.
    `jobs`: the run's --jobs (Results.jobs), read where a case's worker recorded no start and finish."""
    out = []
    index: dict[tuple, list[CaseResult]] | None = None  # built at the first case that needs it
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
            index = sibling_index(cases) if index is None else index
            steps.append(_decide(c, s, spec, index, jobs))
        verdict, reason = case_verdict(steps, c.scenario_outcomes)
        out.append(replace(c, steps=tuple(steps), verdict=verdict, reason=reason))
    return tuple(out)


def _wanted(c: CaseResult) -> bool:
    if not c.case or not c.params.get("strategy"):
        return False
    steps = c.case.get("scenario", {}).get("steps", [])
    return any((st.get("expect") or {}).get("faster_than") for st in steps)


def _decide(c: CaseResult, s: StepRecord, spec, index: dict, jobs: int) -> StepRecord:
    outcomes = [o for o in s.outcomes if o.expectation != EXPECTATION]
    notes = [n for n in s.notes if not n.startswith(_NOTE)]
    mine = _latencies(c)
    for strategy, factor in spec.expect.faster_than:
        if strategy == c.params.get("strategy"):
            continue  # the expectation is the step's, so every strategy has it: a case is not its own rival
        other = _sibling(c, strategy, index)
        theirs = _latencies(other) if other is not None else None
        if not mine or not theirs:
            notes.append(
                f"{_NOTE}{strategy}: not evaluated (no finished {strategy} case of this run to compare)"
            )
            continue
        comparable, how = side_by_side(c, other, jobs)
        if not comparable:
            notes.append(f"{_NOTE}{strategy}: not decided: {c.case_id} and {other.case_id} {how}")
            continue
        found = ratio_ci(mine, theirs)
        if found is None:
            few = min(len(mine), len(theirs)) < MIN_SAMPLES
            why = (
                f"{len(mine)} and {len(theirs)} requests; the confidence interval needs at least {MIN_SAMPLES} "
                "on each side"
                if few
                else "no finite confidence interval (a median latency of 0, or a latency that is not finite)"
            )
            notes.append(f"{_NOTE}{strategy}: not decided: {why}")
            continue
        ratio, low, high = found
        ci = (
            f"p50 ratio {ratio:.3g}, {CONFIDENCE:.0%} CI [{low:.3g}, {high:.3g}] over {len(mine)} and "
            f"{len(theirs)} requests" + (f"; {how}" if how else "")
        )
        if low < factor <= high:
            notes.append(
                f"{_NOTE}{strategy}: not decided: the {ci} contains {factor:g} (too noisy to tell; "
                "never a pass)"
            )
            continue
        outcomes.append(
            outcome(
                EXPECTATION,
                f"{CONFIDENCE:.0%} CI of p50 / {strategy}'s p50 below {factor:g}",
                ci,
                high < factor,
                f"median latency is not below {factor:g} x {other.case_id}'s: {ci}, at or above {factor:g}",
                find_known(spec.known_failures, EXPECTATION, c.params),
                measured=ratio,
            )
        )
    return replace(s, outcomes=tuple(outcomes), notes=tuple(notes), status=step_status(outcomes))
