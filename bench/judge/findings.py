"""One metric of one case (or step), baseline against current: a Finding with its status and message.

Decisions are pure functions of (policy, baseline figure, current figure). A sampled latency counts as a
regression only when all three hold: the one-sided Mann-Whitney U test on the raw samples says the current
run is slower (p < alpha), the median rose by more than `rel`, and the fastest call rose by more than `rel`
too. The last rule is the noise guard: a busy machine delays some calls, while slower code delays all of them,
the fastest included.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.judge.thresholds import MetricPolicy
from bench.results.records import FAILING_VERDICTS
from bench.results.stats import MIN_SAMPLES, mann_whitney_u

# Statuses a finding can have. Only a gated "regression", "still_failing", "missing" or "coverage_lost"
# fails the gate.
STATUSES = (
    "regression",
    "still_failing",
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
GATE_FAILING = ("regression", "still_failing", "missing", "coverage_lost")


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
        return self.gated and self.status in GATE_FAILING


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
    """+12%; a change of 100x or more as a factor (x1e+298): a percentage of 1e300 printed 301 digits."""
    if change is None:
        return ""
    return f"{change:+.0%}" if abs(change) < 100 else f"x{change + 1:.3g}"


# ---------------------------------------------------------------------------------------------------------
# Pure decisions


def finding(p: MetricPolicy, key, base, cur, status: str, message: str, **kw) -> Finding:
    """A Finding of policy p for key (case_id, step, op), its fields read from the policy."""
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


def judge_verdict(
    p: MetricPolicy,
    case_id: str,
    base: str | None,
    cur: str | None,
    base_known: tuple[str, ...] = (),
    cur_known: tuple[str, ...] = (),
    *,
    base_unverified: bool = False,
    cur_unverified: bool = False,
) -> Finding:
    """`base_known` / `cur_known`: the known failures (reason and fingerprint) each side's xfail outcomes
    matched; `*_unverified`: a pass with a step no pair of oracles verified. An xfail that now matches
    another marker, or the same marker with another fingerprint, is a different known bug: a regression, not
    "unchanged"."""
    key = (case_id, None, None)
    if cur is None:
        return finding(p, key, base, None, "missing", "case is in the baseline but did not run now")
    if cur == "not_run":
        return finding(p, key, base, cur, "missing", "case did not run (interrupted or pending)")
    if base in COVERAGE_LOST_FROM and cur in COVERAGE_LOST_TO:
        return finding(
            p,
            key,
            base,
            cur,
            "coverage_lost",
            f"coverage lost: {base} -> {cur} (allow with --allow-coverage-loss)",
        )
    if base == cur == "pass" and cur_unverified and not base_unverified:
        # Both oracles verified the baseline's pass; one could not run now: less checked, as a skip is.
        return finding(
            p,
            key,
            "pass",
            "pass (unverified)",
            "coverage_lost",
            "coverage lost: a pass both oracles verified is now unverified (an oracle did not run; allow with "
            "--allow-coverage-loss)",
        )
    if cur == "skip" and base not in (None, "skip"):
        # Not worse code, but less coverage (a precision this machine cannot run): say so, do not gate.
        return finding(p, key, base, cur, "not_compared", f"skipped in the current run (was {base})")
    if base is None:
        if cur in FAILING_VERDICTS:
            return finding(p, key, None, cur, "regression", f"new case, and it is {cur}")
        return finding(p, key, None, cur, "new", "new case (not in the baseline)")
    if cur in FAILING_VERDICTS and base not in FAILING_VERDICTS:
        return finding(p, key, base, cur, "regression", f"verdict got worse: {base} -> {cur}")
    if cur in FAILING_VERDICTS:
        # Failing in the baseline too is not "unchanged": an error checked nothing, and a fail or xpass is a
        # wrong output or a marker that no longer holds. A baseline made by --update-baseline holds no such
        # case; one written by hand or merged from elsewhere must not turn them into passes.
        return finding(
            p,
            key,
            base,
            cur,
            "still_failing",
            f"still {cur} (the baseline's verdict: {base}); a failing case never passes the gate: fix it, "
            "or mark an upstream bug known_failure",
        )
    if base in FAILING_VERDICTS and cur not in FAILING_VERDICTS:
        return finding(p, key, base, cur, "improvement", f"verdict got better: {base} -> {cur}")
    if base == cur == "xfail" and base_known != cur_known:
        changed = "; ".join(sorted(set(cur_known) - set(base_known))) or "fewer known failures"
        return finding(p, key, base, cur, "regression", f"xfail on another known failure now: {changed}")
    if base != cur:
        return finding(p, key, base, cur, "unchanged", f"verdict changed within its class: {base} -> {cur}")
    return finding(p, key, base, cur, "unchanged", f"verdict {cur}")


def judge_number(p: MetricPolicy, key, base: float | None, cur: float | None) -> Finding:
    """Counts, bytes and single calls: a threshold on the change, no test (there is one figure per side)."""
    if base is None or cur is None:
        side = "baseline" if base is None else "current run"
        return finding(p, key, base, cur, "not_compared", f"no figure in the {side}")
    worse, better = _beyond(p, base, cur)
    change = _change(base, cur)
    moved = f"{fmt_value(base, p.unit)} -> {fmt_value(cur, p.unit)}" + (
        f" ({fmt_change(change)})" if change is not None else ""
    )
    limit = f"rel {p.rel:g}" + (f", abs {fmt_value(p.abs, p.unit)}" if p.abs else "")
    if p.basis == "count":
        limit = "any rise" if p.rel == 0 and p.abs == 0 else limit
    if worse:
        return finding(p, key, base, cur, "regression", f"{moved}, beyond {limit}", change_rel=change)
    if better:
        return finding(p, key, base, cur, "improvement", moved, change_rel=change)
    status = "unchanged" if base == cur else "noise"
    msg = moved if base == cur else f"{moved}, within {limit}"
    return finding(p, key, base, cur, status, msg, change_rel=change)


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
        return finding(
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
        return finding(
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
        return finding(
            p,
            key,
            med_b,
            med_c,
            "regression",
            f"{moved}; {stats} < alpha {p.alpha:g}; beyond rel {p.rel:g}",
            **common,
        )
    if faster and change < -p.rel and floor_change < -p.rel:
        return finding(p, key, med_b, med_c, "improvement", f"{moved}; {stats}", **common)
    if (slower and change > p.rel) or (faster and change < -p.rel):
        why = "the fastest call barely moved: machine noise (contention), not a slower code path"
        return finding(p, key, med_b, med_c, "noise", f"{moved}; {stats}; {why}", **common)
    if slower or faster:
        return finding(p, key, med_b, med_c, "noise", f"{moved}; {stats}; within rel {p.rel:g}", **common)
    return finding(p, key, med_b, med_c, "unchanged", f"{moved}; {stats}: not significant", **common)
