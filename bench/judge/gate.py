"""The regression gate: a Comparison in, pass or fail out, with one message per failure.

A failure names the case (and step), the metric, both values and why it counts; the gate's closing line is
the command that makes the current run the new baseline, for when the change is intended.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from bench.judge.compare import Comparison
from bench.judge.findings import Finding, fmt_value
from bench.results.records import FAILING_VERDICTS

FAILING_NOW = tuple(str(v) for v in FAILING_VERDICTS)  # a verdict finding's current value, as text

DEFAULT_BASELINE = Path("reports/baseline/results.json")


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: tuple[Finding, ...]
    messages: tuple[str, ...]  # one per failure
    timing: str  # how speed was compared, in words
    update_command: str
    missing_allowed: int = 0  # baseline cases absent from the run that --allow-missing let through
    coverage_allowed: int = 0  # coverage losses --allow-coverage-loss let through

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    @property
    def advice(self) -> str:
        """The closing line of a failed gate. Baseline cases missing from the run (a shard, a -k, a run
        that stopped early): --allow-missing, never the update command, which would make the few cases
        that ran the whole baseline. Cases failing now (newly or as in the baseline): no update command
        either, which refuses such a run."""
        unfinished = sum(1 for f in self.failures if _unfinished(f))
        absent = sum(1 for f in self.failures if f.status == "missing" and not _unfinished(f))
        lines = []
        failing = [f for f in self.failures if f.metric == "verdict" and str(f.current) in FAILING_NOW]
        if failing:
            before = sum(1 for f in failing if f.status == "still_failing")
            lines.append(
                f"{len(failing)} case(s) fail, error or xpass in this run"
                + (f" ({before} as in the baseline)" if before else "")
                + ": fix them, or mark an upstream bug known_failure; --update-baseline refuses a run with "
                "failing cases"
            )
        if unfinished:
            lines.append(
                f"{unfinished} case(s) of this run did not finish (interrupted, or still pending): finish it "
                "with `peft-bench run --resume`, then gate it; --allow-missing does not cover them"
            )
        if absent:
            lines.append(
                f"{absent} baseline case(s) did not run here: if this run covers part of the baseline on "
                "purpose (a shard, -k, --tag), gate it with --allow-missing; update the baseline only from a "
                "complete run"
            )
        return "\n".join(lines) or f"If the change is intended, update the baseline: {self.update_command}"


def _unfinished(f: Finding) -> bool:
    """A case this run selected and did not finish (recorded not_run: it was interrupted, or killed before the
    case's turn). --allow-missing is for a run that covers part of the baseline on purpose; a run that
    stopped early is not one, whether or not its unfinished cases are in the baseline."""
    return f.status == "missing" and f.current == "not_run"


def update_command(current: str | Path, baseline: str | Path) -> str:
    return shlex.join(["peft-bench", "gate", str(current), "--baseline", str(baseline), "--update-baseline"])


def failure_message(f: Finding) -> str:
    return (
        f"{f.where}: {f.metric}: baseline {fmt_value(f.baseline, f.unit)}, "
        f"current {fmt_value(f.current, f.unit)}: {f.message}"
    )


def decide(
    comparison: Comparison, command: str, *, allow_missing: bool = False, allow_coverage_loss: bool = False
) -> GateResult:
    """Gated findings that are regressions fail; so do baseline cases that did not run, unless allowed
    (a sharded or filtered run), cases the run did not finish, always, and baseline passes that now skip or
    xfail, unless allowed."""
    failures = []
    missing_allowed = coverage_allowed = 0
    for f in comparison.findings:
        if not f.fails_gate:
            continue
        if f.status == "missing" and allow_missing and not _unfinished(f):
            missing_allowed += 1
        elif f.status == "coverage_lost" and allow_coverage_loss:
            coverage_allowed += 1
        else:
            failures.append(f)
    return GateResult(
        passed=not failures,
        failures=tuple(failures),
        messages=tuple(failure_message(f) for f in failures),
        timing=comparison.timing_reason,
        update_command=command,
        missing_allowed=missing_allowed,
        coverage_allowed=coverage_allowed,
    )
