"""`peft-bench gate CURRENT`: exit 1 when the current run is worse than the baseline beyond noise."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.cli.commands.compare import add_policy_options, policy_from_args
from bench.cli.paths import check_named_out_file
from bench.errors import BenchInputError
from bench.judge.compare import compare, rules_mismatch
from bench.judge.gate import DEFAULT_BASELINE, decide, update_command
from bench.report.comparison import MAX_ROWS, comparison_markdown, comparison_text
from bench.results.atomic import write_text
from bench.results.brief import clipped
from bench.results.collector import collector_paused
from bench.results.records import FAILING_VERDICTS
from bench.results.store import RESULTS_FILE, load_for_judging

NAME = "gate"
CONFIG_BESIDE_BASELINE = "gate.toml"


def register(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="fail (exit 1) when a run regressed against the baseline",
        description="Fails when a verdict got worse, a recompile or graph-break count rose, memory rose beyond "
        "its threshold, or a latency regression is significant (U test) and beyond its threshold. Times are "
        "compared only between runs on the same kind of machine; otherwise ratios within each run are. "
        f"Thresholds: defaults, then {CONFIG_BESIDE_BASELINE} beside the baseline (or --config), then flags.",
    )
    p.add_argument("current", type=Path, help="current results.json or its folder")
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help=f"default {DEFAULT_BASELINE}")
    add_policy_options(p)
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="baseline cases absent from this run do not fail (shards)",
    )
    p.add_argument(
        "--allow-coverage-loss",
        action="store_true",
        help="baseline passes that now skip or xfail do not fail (a precision dropped on purpose)",
    )
    p.add_argument(
        "--summary",
        type=Path,
        help="append the Markdown verdict to this file (default: $GITHUB_STEP_SUMMARY when it is set)",
    )
    p.add_argument(
        "--update-baseline",
        action="store_true",
        help="make CURRENT the new baseline (when a change is intended) instead of gating",
    )
    p.add_argument("--all", action="store_true", help="list every finding, not only what changed")


def _current_file(path: Path) -> Path:
    return path / RESULTS_FILE if path.is_dir() else path


def _update(args: argparse.Namespace, current) -> int:
    if not current.cases:
        raise BenchInputError(
            "holds no case: a baseline of no case would let every later run pass", source=str(args.current)
        )
    bad = [c.case_id for c in current.cases if c.verdict in (*FAILING_VERDICTS, "not_run")]
    if bad:
        raise BenchInputError(
            f"{len(bad)} case(s) failed or did not run ({', '.join(bad[:5])}); a baseline records a healthy run: "
            "fix them, or mark upstream bugs known_failure in the scenario",
            source=str(args.current),
        )
    target = args.baseline / "results.json" if args.baseline.is_dir() else args.baseline
    write_text(target, _current_file(args.current).read_text(encoding="utf-8"))
    print(f"peft-bench: baseline {target} updated from {args.current} ({len(current.cases)} case(s))")
    return 0


def _summary_file(args: argparse.Namespace) -> Path | None:
    """The file the Markdown verdict is appended to, checked before any work: a folder or a missing
    folder is an input error, not a traceback after the verdict."""
    env = os.environ.get("GITHUB_STEP_SUMMARY")
    summary, given = (
        (args.summary, "--summary") if args.summary else (env and Path(env), "$GITHUB_STEP_SUMMARY")
    )
    if summary:
        check_named_out_file(summary, given)
    return summary or None


def run(args: argparse.Namespace) -> int:
    with collector_paused():  # findings and loaded cases hold no cycles (bench.results.collector)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    current = load_for_judging(args.current)
    if args.update_baseline:
        return _update(args, current)
    summary = _summary_file(args)
    baseline_file = args.baseline / "results.json" if args.baseline.is_dir() else args.baseline
    if not baseline_file.is_file():
        raise BenchInputError(
            "no baseline: record one with `peft-bench gate CURRENT --baseline FILE --update-baseline`",
            source=str(baseline_file),
        )
    baseline = load_for_judging(baseline_file)
    if why := rules_mismatch(baseline, current):
        # A verdict under older rules is not the same claim: gating against it could pass a run the new rules fail.
        raise BenchInputError(
            f"{why}; regenerate the baseline: {update_command(args.current, baseline_file)}",
            source=str(baseline_file),
        )
    config, policy = policy_from_args(args, baseline_file.parent / CONFIG_BESIDE_BASELINE)
    c = compare(
        baseline,
        current,
        policy,
        timing=args.timing,
        baseline_label=str(baseline_file),
        current_label=str(args.current),
    )
    result = decide(
        c,
        update_command(args.current, baseline_file),
        allow_missing=args.allow_missing,
        allow_coverage_loss=args.allow_coverage_loss,
    )
    print(comparison_text(c, show_all=args.all), end="")
    if config:
        print(f"thresholds: defaults with {config}")
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(comparison_markdown(c, show_all=args.all, gate=result) + "\n")
    if result.passed:
        print(f"peft-bench gate: PASS ({len(c.findings)} finding(s), none gated worse)")
        return 0
    print(f"peft-bench gate: FAIL: {len(result.failures)} gated finding(s)")
    for m in result.messages[:MAX_ROWS]:
        print(f"  {clipped(m)}")
    if len(result.messages) > MAX_ROWS:
        print(f"  ... and {len(result.messages) - MAX_ROWS} more (the findings above; --all lists every one)")
    print(result.advice)
    return result.exit_code
