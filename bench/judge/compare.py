"""Two results files, case by case and metric by metric: what got worse, what got better, what is noise.

Each figure is decided by bench.judge.findings (pure functions returning a Finding with its message).
Speed figures are compared as absolute times only when both runs come from the same kind of machine
(bench.results.environment.same_machine); otherwise as ratios measured within each run, and the Comparison says which.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bench.judge.figures import (
    case_peak,
    eager_index,
    eager_twin,
    first_measured,
    footprint_bytes,
    is_hotswap,
    switch_ms,
    switch_over_reload,
)
from bench.judge.findings import (
    Finding,
    finding,
    judge_number,
    judge_samples,
    judge_verdict,
)
from bench.judge.thresholds import DEFAULT_POLICY, MetricPolicy
from bench.results.environment import same_machine
from bench.results.failures import known_failures_of, unverified_reason
from bench.results.records import CaseResult, Environment, Results, StepRecord

TIMING_MODES = ("auto", "absolute", "ratio")


@dataclass(frozen=True)
class Comparison:
    baseline_label: str
    current_label: str
    timing: str  # "absolute" | "ratio": how speed figures were compared
    timing_reason: str
    findings: tuple[Finding, ...]
    baseline_environment: Environment
    current_environment: Environment

    def by_status(self, *statuses: str) -> list[Finding]:
        return [f for f in self.findings if f.status in statuses]


# ---------------------------------------------------------------------------------------------------------
# The comparison


def timing_basis(
    base: Environment, cur: Environment, mode: str = "auto", jobs: tuple[int, int] = (1, 1)
) -> tuple[str, str]:
    """("absolute" | "ratio", the reason in words). `jobs`: each run's `--jobs`; cases that ran beside
    others measured a few per cent slower (reports/fidelity), so runs of different --jobs compare as ratios."""
    if mode not in TIMING_MODES:
        raise ValueError(f"timing mode must be one of {TIMING_MODES}, got {mode!r}")
    same = same_machine(base, cur) and jobs[0] == jobs[1]
    desc = f"{cur.device}, {cur.cpu} x{cur.cpu_count}, torch {cur.libraries.get('torch')}"
    if mode == "absolute":
        return "absolute", "absolute times (forced)" + ("" if same else ": the environments differ")
    if mode == "ratio":
        return "ratio", "ratios measured within each run (forced)"
    if same:
        return "absolute", f"absolute times: both runs on the same kind of machine ({desc})"
    diffs = [
        f"{name} {a!r} vs {b!r}"
        for name, a, b in (
            ("device", base.device, cur.device),
            ("gpu", base.gpu, cur.gpu),
            ("cpu", base.cpu, cur.cpu),
            ("cpu_count", base.cpu_count, cur.cpu_count),
            ("torch", base.libraries.get("torch"), cur.libraries.get("torch")),
            ("torch_threads", base.torch_threads, cur.torch_threads),
            ("jobs", jobs[0], jobs[1]),
        )
        if a != b
    ]
    return "ratio", "ratios measured within each run: the environments differ (" + "; ".join(diffs) + ")"


def compare(
    baseline: Results,
    current: Results,
    policy: dict[str, MetricPolicy] | None = None,
    *,
    timing: str = "auto",
    baseline_label: str = "baseline",
    current_label: str = "current",
) -> Comparison:
    policy = policy or DEFAULT_POLICY
    jobs = (baseline.jobs, current.jobs)
    basis, reason = timing_basis(baseline.environment, current.environment, timing, jobs)
    same_env = same_machine(baseline.environment, current.environment) and jobs[0] == jobs[1]
    base_cases = {c.case_id: c for c in baseline.cases}
    cur_cases = {c.case_id: c for c in current.cases}
    findings: list[Finding] = []
    twins = (eager_index(baseline), eager_index(current))
    for case_id in [*base_cases, *(c for c in cur_cases if c not in base_cases)]:
        b, c = base_cases.get(case_id), cur_cases.get(case_id)
        findings.append(
            judge_verdict(
                policy["verdict"],
                case_id,
                b.verdict if b else None,
                c.verdict if c else None,
                known_failures_of(b),
                known_failures_of(c),
                base_unverified=b is not None and unverified_reason(b) is not None,
                cur_unverified=c is not None and unverified_reason(c) is not None,
            )
        )
        if b is None or c is None or c.verdict == "not_run":
            continue
        findings += _case_findings(policy, b, c, twins, basis, same_env)
    return Comparison(
        baseline_label=baseline_label,
        current_label=current_label,
        timing=basis,
        timing_reason=reason,
        findings=tuple(findings),
        baseline_environment=baseline.environment,
        current_environment=current.environment,
    )


def _case_findings(
    policy, b: CaseResult, c: CaseResult, twins: tuple[dict, dict], basis: str, same_env: bool
) -> Iterator[Finding]:
    cid = c.case_id
    b_steps = {s.index: s for s in b.steps}
    aligned = [b.steps[i].op == s.op for i, s in enumerate(c.steps) if i < len(b.steps)]
    steps_align = len(b.steps) == len(c.steps) and all(aligned)
    for s in c.steps:
        bs = b_steps.get(s.index)
        if bs is None or bs.op != s.op or s.status == "not_run" or bs.status == "not_run":
            continue
        key = (cid, s.index, s.op)
        for metric in ("recompiles", "graph_breaks"):
            if bs.compile and s.compile:
                yield judge_number(
                    policy[metric], key, getattr(bs.compile, metric), getattr(s.compile, metric)
                )
        if bs.compile and s.compile and bs.compile.frame_compiles != s.compile.frame_compiles:
            yield judge_number(
                policy["frame_compiles"], key, bs.compile.frame_compiles, s.compile.frame_compiles
            )
        yield from _step_timing(policy, key, b, bs, c, s, twins, basis)
    if not steps_align:
        for metric, attr in (
            ("total_recompiles", "total_recompiles"),
            ("total_graph_breaks", "total_graph_breaks"),
        ):
            if getattr(b, attr) is not None or getattr(c, attr) is not None:
                yield judge_number(policy[metric], (cid, None, None), getattr(b, attr), getattr(c, attr))
    key = (cid, None, None)
    yield judge_number(policy["footprint_bytes"], key, footprint_bytes(b), footprint_bytes(c))
    for metric in ("rss_peak_bytes", "cuda_allocated_peak_bytes"):
        bv, cv = case_peak(b, metric), case_peak(c, metric)
        if bv is None and cv is None:
            continue  # not measurable on this machine (the records say why)
        if not same_env:
            yield finding(
                policy[metric],
                key,
                bv,
                cv,
                "not_compared",
                "the environments differ: process memory depends on the machine's libraries and allocator",
            )
            continue
        yield judge_number(policy[metric], key, bv, cv)


def _step_timing(policy, key, b, bs: StepRecord, c, s: StepRecord, twins: tuple[dict, dict], basis: str):
    if basis == "absolute":
        if bs.timing and s.timing:
            yield judge_samples(policy["latency_ms"], key, bs.timing.samples_ms, s.timing.samples_ms)
        if is_hotswap(s):
            yield judge_number(policy["switch_ms"], key, switch_ms(bs), switch_ms(s))
        return
    if is_hotswap(s):
        yield judge_number(
            policy["switch_over_reload"], key, switch_over_reload(b, bs), switch_over_reload(c, s)
        )
    if s.timing is None or bs.timing is None:
        return
    b_twin, c_twin = eager_twin(b, twins[0]), eager_twin(c, twins[1])
    if b_twin and c_twin:
        b_ref = next((t for t in b_twin.steps if t.index == s.index and t.timing), None)
        c_ref = next((t for t in c_twin.steps if t.index == s.index and t.timing), None)
        if b_ref and c_ref:
            yield judge_samples(
                policy["compiled_over_eager"],
                key,
                bs.timing.samples_ms,
                s.timing.samples_ms,
                b_ref.timing.samples_ms,
                c_ref.timing.samples_ms,
            )
    b_first, c_first = first_measured(b), first_measured(c)
    if b_first and c_first and b_first.index == c_first.index and b_first.index != s.index:
        yield judge_samples(
            policy["latency_over_first"],
            key,
            bs.timing.samples_ms,
            s.timing.samples_ms,
            b_first.timing.samples_ms,
            c_first.timing.samples_ms,
        )


def rules_mismatch(baseline: Results, current: Results) -> str | None:
    """Why two runs' verdicts cannot be compared as equals: judged under different verdict rules (None: same)."""
    if baseline.verdict_rules == current.verdict_rules:
        return None
    older = "the baseline" if baseline.verdict_rules < current.verdict_rules else "the current run"
    return (
        f"the baseline was judged under verdict rules {baseline.verdict_rules}, the current run under "
        f"{current.verdict_rules}: {older} is older, and its pass/xfail may hide what the newer rules catch"
    )
