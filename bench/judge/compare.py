"""Two results files, case by case and metric by metric: what got worse, what got better, what is noise.

Decisions are pure functions of (policy, baseline figure, current figure) returning a Finding with its message.
Speed figures are compared as absolute times only when both runs come from the same kind of machine
(bench.environment.same_machine); otherwise as ratios measured within each run, and the Comparison says which.

A sampled latency counts as a regression only when all three hold: the one-sided Mann-Whitney U test on the
raw samples says the current run is slower (p < alpha), the median rose by more than `rel`, and the fastest
call rose by more than `rel` too. The last rule is the noise guard: a busy machine delays some calls, while
slower code delays all of them, the fastest included.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bench.environment import same_machine
from bench.judge.stats import MIN_SAMPLES, mann_whitney_u
from bench.judge.thresholds import DEFAULT_POLICY, MetricPolicy
from bench.records import FAILING_VERDICTS, CaseResult, Environment, Results, StepRecord

TIMING_MODES = ("auto", "absolute", "ratio")
# Statuses a finding can have. Only a gated "regression", "missing" or "coverage_lost" fails the gate.
STATUSES = (
    "regression",
    "improvement",
    "unchanged",
    "noise",
    "not_compared",
    "missing",
    "new",
    "coverage_lost",
)
# A baseline pass that now skips or is a known failure checks less than before: the gate must not let a
# suite lose its coverage silently (a precision that stopped running, a marker added to hide a bug).
COVERAGE_LOST_FROM = ("pass",)
COVERAGE_LOST_TO = ("skip", "xfail")


@dataclass(frozen=True)
class Finding:
    case_id: str
    step: int | None  # None for case-level metrics
    op: str | None
    metric: str
    basis: str  # verdict | count | samples | single | bytes (from the policy)
    unit: str
    baseline: float | str | None
    current: float | str | None
    status: str
    gated: bool  # this finding fails the gate when its status is regression or missing
    message: str
    change_rel: float | None = None  # current / baseline - 1, for numbers
    p_value: float | None = None  # one-sided U test p in the direction of the change
    n: tuple[int, int] | None = None  # (baseline, current) sample counts

    @property
    def where(self) -> str:
        return self.case_id if self.step is None else f"{self.case_id} step {self.step} ({self.op})"

    @property
    def fails_gate(self) -> bool:
        return self.gated and self.status in ("regression", "missing", "coverage_lost")


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
# Formatting (used in messages; renderers reuse it)


def fmt_value(value: float | str | None, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "ms":
        return f"{value:.3g} ms"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "ratio":
        return f"{value:.3g}x"
    if unit == "count":
        return str(int(value))
    return f"{value:.3g}"


def fmt_change(change: float | None) -> str:
    return "" if change is None else f"{change:+.0%}"


# ---------------------------------------------------------------------------------------------------------
# Pure decisions


def _finding(p: MetricPolicy, key, base, cur, status: str, message: str, **kw) -> Finding:
    case_id, step, op = key
    return Finding(
        case_id=case_id,
        step=step,
        op=op,
        metric=p.metric,
        basis=p.basis,
        unit=p.unit,
        baseline=base,
        current=cur,
        status=status,
        gated=p.gated,
        message=message,
        **kw,
    )


def _change(base: float, cur: float) -> float | None:
    return None if base == 0 else cur / base - 1


def _beyond(p: MetricPolicy, base: float, cur: float) -> tuple[bool, bool]:
    """(worse, better) beyond both thresholds, in the policy's direction."""
    delta = (cur - base) if p.better == "lower" else (base - cur)
    big = abs(delta) > p.abs and (base == 0 or abs(delta) / abs(base) > p.rel)
    return delta > 0 and big, delta < 0 and big


def judge_verdict(p: MetricPolicy, case_id: str, base: str | None, cur: str | None) -> Finding:
    key = (case_id, None, None)
    if cur is None:
        return _finding(p, key, base, None, "missing", "case is in the baseline but did not run now")
    if cur == "not_run":
        return _finding(p, key, base, cur, "missing", "case did not run (interrupted or pending)")
    if base in COVERAGE_LOST_FROM and cur in COVERAGE_LOST_TO:
        return _finding(
            p,
            key,
            base,
            cur,
            "coverage_lost",
            f"coverage lost: {base} -> {cur} (allow with --allow-coverage-loss)",
        )
    if cur == "skip" and base not in (None, "skip"):
        # Not worse code, but less coverage (a precision this machine cannot run): say so, do not gate.
        return _finding(p, key, base, cur, "not_compared", f"skipped in the current run (was {base})")
    if base is None:
        if cur in FAILING_VERDICTS:
            return _finding(p, key, None, cur, "regression", f"new case, and it is {cur}")
        return _finding(p, key, None, cur, "new", "new case (not in the baseline)")
    if cur in FAILING_VERDICTS and base not in FAILING_VERDICTS:
        return _finding(p, key, base, cur, "regression", f"verdict got worse: {base} -> {cur}")
    if base in FAILING_VERDICTS and cur not in FAILING_VERDICTS:
        return _finding(p, key, base, cur, "improvement", f"verdict got better: {base} -> {cur}")
    if base != cur:
        return _finding(p, key, base, cur, "unchanged", f"verdict changed within its class: {base} -> {cur}")
    return _finding(p, key, base, cur, "unchanged", f"verdict {cur}")


def judge_number(p: MetricPolicy, key, base: float | None, cur: float | None) -> Finding:
    """Counts, bytes and single calls: a threshold on the change, no test (there is one figure per side)."""
    if base is None or cur is None:
        side = "baseline" if base is None else "current run"
        return _finding(p, key, base, cur, "not_compared", f"no figure in the {side}")
    worse, better = _beyond(p, base, cur)
    change = _change(base, cur)
    moved = f"{fmt_value(base, p.unit)} -> {fmt_value(cur, p.unit)}" + (
        f" ({fmt_change(change)})" if change is not None else ""
    )
    limit = f"rel {p.rel:g}" + (f", abs {fmt_value(p.abs, p.unit)}" if p.abs else "")
    if p.basis == "count":
        limit = "any rise" if p.rel == 0 and p.abs == 0 else limit
    if worse:
        return _finding(p, key, base, cur, "regression", f"{moved}, beyond {limit}", change_rel=change)
    if better:
        return _finding(p, key, base, cur, "improvement", moved, change_rel=change)
    status = "unchanged" if base == cur else "noise"
    msg = moved if base == cur else f"{moved}, within {limit}"
    return _finding(p, key, base, cur, status, msg, change_rel=change)


def judge_samples(
    p: MetricPolicy,
    key,
    base: Sequence[float],
    cur: Sequence[float],
    base_ref: Sequence[float] | None = None,
    cur_ref: Sequence[float] | None = None,
) -> Finding:
    """Repeated timings. With refs, each side is first divided by its own run's reference median, so two
    machines are compared on ratios measured within each run."""
    if len(base) < MIN_SAMPLES or len(cur) < MIN_SAMPLES:
        return _finding(
            p,
            key,
            None,
            None,
            "not_compared",
            f"fewer than {MIN_SAMPLES} samples (baseline {len(base)}, current {len(cur)}): no test possible",
            n=(len(base), len(cur)),
        )
    refs = [*(base_ref or ()), *(cur_ref or ())]
    if min(base) <= 0 or min(cur) <= 0 or (refs and min(refs) <= 0):
        # A time of zero or less is no measurement (a hand-edited or corrupted file): no ratio exists.
        return _finding(
            p,
            key,
            None,
            None,
            "not_compared",
            "a timing sample of 0 ms or less: no ratio possible",
            n=(len(base), len(cur)),
        )
    floor_b, floor_c = min(base), min(cur)
    if base_ref is not None and cur_ref is not None:
        med_ref_b, med_ref_c = statistics.median(base_ref), statistics.median(cur_ref)
        base = [x / med_ref_b for x in base]
        cur = [x / med_ref_c for x in cur]
        floor_b, floor_c = floor_b / min(base_ref), floor_c / min(cur_ref)
    med_b, med_c = statistics.median(base), statistics.median(cur)
    test = mann_whitney_u(cur, base)
    change, floor_change = med_c / med_b - 1, floor_c / floor_b - 1
    n = (len(base), len(cur))
    moved = (
        f"median {fmt_value(med_b, p.unit)} -> {fmt_value(med_c, p.unit)} ({fmt_change(change)}), "
        f"fastest {fmt_change(floor_change)}"
    )
    slower = test.p_greater < p.alpha
    faster = test.p_less < p.alpha
    p_dir = test.p_greater if change >= 0 else test.p_less
    stats = f"U test p={p_dir:.2g}, n={n[0]}/{n[1]}"
    common = dict(change_rel=change, p_value=p_dir, n=n)
    if slower and change > p.rel and floor_change > p.rel:
        return _finding(
            p,
            key,
            med_b,
            med_c,
            "regression",
            f"{moved}; {stats} < alpha {p.alpha:g}; beyond rel {p.rel:g}",
            **common,
        )
    if faster and change < -p.rel and floor_change < -p.rel:
        return _finding(p, key, med_b, med_c, "improvement", f"{moved}; {stats}", **common)
    if (slower and change > p.rel) or (faster and change < -p.rel):
        why = "the fastest call barely moved: machine noise (contention), not a slower code path"
        return _finding(p, key, med_b, med_c, "noise", f"{moved}; {stats}; {why}", **common)
    if slower or faster:
        return _finding(p, key, med_b, med_c, "noise", f"{moved}; {stats}; within rel {p.rel:g}", **common)
    return _finding(p, key, med_b, med_c, "unchanged", f"{moved}; {stats}: not significant", **common)


# ---------------------------------------------------------------------------------------------------------
# Figures taken from the records


def switch_ms(step: StepRecord) -> float | None:
    """Swap (or load) call plus the first call after it: what serving pays for one change."""
    if step.op_time_ms is None or step.first_call_ms is None:
        return None
    return step.op_time_ms + step.first_call_ms


def is_hotswap(step: StepRecord) -> bool:
    return step.op == "load_adapter" and bool(step.args.get("hotswap"))


def output_wrong(step: StepRecord) -> bool:
    """The step's checked output did not match its reference: its timings are of a wrong answer."""
    return step.output is not None and not step.output.matches


def reload_step(case: CaseResult) -> StepRecord | None:
    """The cost a hotswap avoids: the case's first plain (non-hotswap) load_adapter with both timings and a
    matching output that ran on the model the swaps run on. In a compiled case that is a load AFTER the
    compile step, whose first call carries the recompile a reload costs; a load before it ran eager and
    would make any swap look slow."""
    compiled_at = next((s.index for s in case.steps if s.op == "compile" and s.compile is not None), None)
    return next(
        (
            s
            for s in case.steps
            if s.op == "load_adapter"
            and not is_hotswap(s)
            and switch_ms(s) is not None
            and not output_wrong(s)
            and (compiled_at is None or s.index > compiled_at)
        ),
        None,
    )


def switch_over_reload(case: CaseResult, step: StepRecord) -> float | None:
    """(swap + first call) / (reload + first call); None when either is missing or the swap's output was
    wrong: a wrong answer is never a speed-up."""
    reload = reload_step(case)
    swap = switch_ms(step)
    if reload is None or swap is None or output_wrong(step):
        return None
    return swap / switch_ms(reload)


def case_peak(case: CaseResult, field: str) -> int | None:
    values = [
        getattr(s.memory, field) for s in case.steps if s.memory and getattr(s.memory, field) is not None
    ]
    return max(values) if values else None


def footprint_bytes(case: CaseResult) -> int | None:
    f = case.footprint
    return None if f is None else f.memory_footprint_bytes + f.quant_state_bytes


def eager_twin(case: CaseResult, results: Results) -> CaseResult | None:
    """The same scenario and parameters with compile 'none', in the same run."""
    if case.params.get("compile") == "none":
        return None
    want = {**case.params, "compile": "none"}
    return next((c for c in results.cases if c.scenario == case.scenario and c.params == want), None)


def first_measured(case: CaseResult) -> StepRecord | None:
    return next((s for s in case.steps if s.timing is not None), None)


# ---------------------------------------------------------------------------------------------------------
# The comparison


def timing_basis(base: Environment, cur: Environment, mode: str = "auto") -> tuple[str, str]:
    """("absolute" | "ratio", the reason in words)."""
    if mode not in TIMING_MODES:
        raise ValueError(f"timing mode must be one of {TIMING_MODES}, got {mode!r}")
    same = same_machine(base, cur)
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
    basis, reason = timing_basis(baseline.environment, current.environment, timing)
    same_env = same_machine(baseline.environment, current.environment)
    base_cases = {c.case_id: c for c in baseline.cases}
    cur_cases = {c.case_id: c for c in current.cases}
    findings: list[Finding] = []
    for case_id in [*base_cases, *(c for c in cur_cases if c not in base_cases)]:
        b, c = base_cases.get(case_id), cur_cases.get(case_id)
        findings.append(
            judge_verdict(policy["verdict"], case_id, b.verdict if b else None, c.verdict if c else None)
        )
        if b is None or c is None or c.verdict == "not_run":
            continue
        findings += _case_findings(policy, b, c, baseline, current, basis, same_env)
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
    policy, b: CaseResult, c: CaseResult, b_run: Results, c_run: Results, basis: str, same_env: bool
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
        yield from _step_timing(policy, key, b, bs, c, s, b_run, c_run, basis)
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
            yield _finding(
                policy[metric],
                key,
                bv,
                cv,
                "not_compared",
                "the environments differ: process memory depends on the machine's libraries and allocator",
            )
            continue
        yield judge_number(policy[metric], key, bv, cv)


def _step_timing(policy, key, b, bs: StepRecord, c, s: StepRecord, b_run, c_run, basis: str):
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
    b_twin, c_twin = eager_twin(b, b_run), eager_twin(c, c_run)
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
