"""What makes a probe bad: policy as data (a Criterion parsed from --bad-when) and the decision as a function.

verdict:fail,error        a selected case's verdict is one of these
expectation:NAME          an expectation NAME did not hold, read from the raw outcome (`held`): a
                          known_failure marker turns a failing expectation into `xfail`, and a bisect
                          for an upstream bug must see through it. No NAME outcome at all (the case
                          stopped before it) is untestable, not good.
metric:NAME>VALUE         a figure (a results.csv metric, e.g. latency_ms_median, recompiles) crosses a
metric:NAME<VALUE         threshold in some selected case's step; none recorded is untestable
gate[:THRESHOLDS.toml]    `peft-bench gate` of the probe against the good end's own results fails (the
                          gate's rules: verdicts, recompile counts, U-tested latency, memory)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench.bisect.search import BAD, GOOD, UNTESTABLE
from bench.errors import BenchInputError
from bench.judge.compare import compare
from bench.judge.gate import decide
from bench.judge.thresholds import load_policy
from bench.results.flat_rows import step_metrics
from bench.results.records import CaseResult, Results

VERDICTS = ("pass", "fail", "xfail", "xpass", "error", "skip", "not_run")
KINDS = ("verdict", "expectation", "metric", "gate")


@dataclass(frozen=True)
class Criterion:
    kind: str
    verdicts: tuple[str, ...] = ()
    expectation: str = ""
    metric: str = ""
    op: str = ""  # > or <
    threshold: float = 0.0
    thresholds_file: Path | None = None
    text: str = ""

    @property
    def needs_baseline(self) -> bool:
        return self.kind == "gate"


def parse(text: str) -> Criterion:
    kind, _, arg = text.partition(":")
    if kind == "verdict":
        verdicts = tuple(v.strip() for v in arg.split(",") if v.strip())
        unknown = [v for v in verdicts if v not in VERDICTS]
        if not verdicts or unknown:
            raise BenchInputError(
                f"--bad-when verdict: needs verdicts from {', '.join(VERDICTS)}, got {arg!r}"
            )
        return Criterion("verdict", verdicts=verdicts, text=text)
    if kind == "expectation":
        if not arg:
            raise BenchInputError("--bad-when expectation: needs a name, e.g. expectation:matches_reference")
        return Criterion("expectation", expectation=arg, text=text)
    if kind == "metric":
        m = re.fullmatch(r"\s*([\w\[\]\-.]+)\s*([<>])\s*([-+0-9.eE]+)\s*", arg)
        if not m:
            raise BenchInputError(f"--bad-when metric: wants NAME>VALUE or NAME<VALUE, got {arg!r}")
        try:
            threshold = float(m.group(3))
        except ValueError:
            raise BenchInputError(f"--bad-when metric: {m.group(3)!r} is not a number") from None
        return Criterion("metric", metric=m.group(1), op=m.group(2), threshold=threshold, text=text)
    if kind == "gate":
        return Criterion("gate", thresholds_file=Path(arg) if arg else None, text=text)
    raise BenchInputError(f"--bad-when {text!r}: one of {', '.join(k + ':...' for k in KINDS)}")


def select(results: Results, cases: tuple[str, ...]) -> list[CaseResult]:
    """The cases the search looks at: those whose id contains one of `cases` (all when empty)."""
    return [c for c in results.cases if not cases or any(s in c.case_id for s in cases)]


def judge(
    criterion: Criterion, results: Results, cases: tuple[str, ...] = (), baseline: Results | None = None
) -> tuple[str, str]:
    """(good | bad | untestable, the reason naming the case, the expectation or figure, and its message)."""
    picked = select(results, cases)
    if not picked:
        return (
            UNTESTABLE,
            f"no case matches {list(cases)} (ran: {', '.join(c.case_id for c in results.cases)})",
        )
    if criterion.kind == "verdict":
        bad = [c for c in picked if c.verdict in criterion.verdicts]
        if bad:
            return BAD, "; ".join(f"{c.case_id}: {c.verdict}: {c.reason}" for c in bad)
        return GOOD, "; ".join(f"{c.case_id}: {c.verdict}" for c in picked)
    if criterion.kind == "expectation":
        return _expectation(criterion.expectation, picked)
    if criterion.kind == "metric":
        return _metric(criterion, picked)
    return _gate(criterion, results, picked, baseline)


def _expectation(name: str, picked: list[CaseResult]) -> tuple[str, str]:
    broken, held, missing = [], [], []
    for case in picked:
        outcomes = [(s, o) for s in case.steps for o in s.outcomes if o.expectation == name]
        outcomes += [(None, o) for o in case.scenario_outcomes if o.expectation == name]
        if not outcomes:
            missing.append(f"{case.case_id}: no {name} outcome ({case.verdict}: {case.reason})")
            continue
        failed = [(s, o) for s, o in outcomes if not o.held]
        if failed:
            s, o = failed[0]
            where = f"step {s.index} ({s.op})" if s is not None else "scenario"
            known = " [marked known_failure]" if o.known_failure else ""
            broken.append(f"{case.case_id}: {where}: {name} did not hold{known}: {o.message or o.actual}")
        else:
            held.append(f"{case.case_id}: {name} held in {len(outcomes)} step(s)")
    if broken:
        return BAD, "; ".join(broken)
    if missing:  # some case never reached the expectation: that it held elsewhere proves nothing here
        return UNTESTABLE, "; ".join(missing)
    return GOOD, "; ".join(held)


def _metric(c: Criterion, picked: list[CaseResult]) -> tuple[str, str]:
    crossed, seen = [], []
    for case in picked:
        for step in case.steps:
            for name, value, unit in step_metrics(step):
                if name != c.metric or value is None:
                    continue
                seen.append(f"{case.case_id} step {step.index}: {value:g} {unit}")
                if (value > c.threshold) if c.op == ">" else (value < c.threshold):
                    crossed.append(
                        f"{case.case_id} step {step.index} ({step.op}): {c.metric} {value:g} {unit} {c.op} {c.threshold:g}"
                    )
    if crossed:
        return BAD, "; ".join(crossed)
    if not seen:
        return (
            UNTESTABLE,
            f"no {c.metric} recorded ({'; '.join(f'{x.case_id}: {x.verdict}' for x in picked)})",
        )
    return GOOD, f"{c.metric} within {c.op} {c.threshold:g}: " + "; ".join(seen[:4])


def _gate(
    c: Criterion, results: Results, picked: list[CaseResult], baseline: Results | None
) -> tuple[str, str]:
    from dataclasses import replace

    if baseline is None:
        return GOOD, "the good end is the gate's baseline"
    ids = {x.case_id for x in picked}
    base = replace(baseline, cases=tuple(x for x in baseline.cases if x.case_id in ids))
    policy = load_policy(c.thresholds_file)
    result = decide(compare(base, replace(results, cases=tuple(picked)), policy), "")
    if result.passed:
        return GOOD, f"gate against the good end passes ({result.timing})"
    return BAD, "; ".join(result.messages)
