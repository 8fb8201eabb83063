"""`peft-bench compare BASELINE CURRENT`: case by case, metric by metric, in each metric's better direction."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.judge.compare import TIMING_MODES, compare, rules_mismatch
from bench.judge.thresholds import load_policy, with_flags
from bench.report.comparison import comparison_markdown, comparison_text
from bench.results.collector import collector_paused
from bench.results.store import load_for_judging

NAME = "compare"


def add_policy_options(p: argparse.ArgumentParser) -> None:
    """Options compare and gate share: thresholds and how speed is compared."""
    p.add_argument("--config", type=Path, help="threshold config (TOML, [thresholds.METRIC] tables)")
    p.add_argument("--latency-rel", type=float, help="relative latency threshold (default 0.25)")
    p.add_argument("--memory-rel", type=float, help="relative memory threshold (default 0.10)")
    p.add_argument("--alpha", type=float, help="significance level of the U test (default 0.01)")
    p.add_argument(
        "--timing",
        choices=TIMING_MODES,
        default="auto",
        help="absolute times, ratios within each run, or auto: absolute only on the same kind of machine",
    )


def policy_from_args(args: argparse.Namespace, default_config: Path | None = None):
    config = args.config or (default_config if default_config and default_config.is_file() else None)
    policy = load_policy(config)
    return config, with_flags(
        policy, latency_rel=args.latency_rel, memory_rel=args.memory_rel, alpha=args.alpha
    )


def register(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="compare two results files case by case and metric by metric",
        description="Latency is judged with a one-sided Mann-Whitney U test on the raw samples together with "
        "a relative threshold; counts (recompiles, graph breaks) by any rise; memory by relative and absolute "
        "thresholds. Prints what changed; exit 0 (use `peft-bench gate` to fail on regressions).",
    )
    p.add_argument("baseline", type=Path, help="baseline results.json or its folder")
    p.add_argument("current", type=Path, help="current results.json or its folder")
    p.add_argument("--format", choices=("text", "md"), default="text")
    p.add_argument("--all", action="store_true", help="also show unchanged and not compared findings")
    add_policy_options(p)


def run(args: argparse.Namespace) -> int:
    with collector_paused():  # findings and loaded cases hold no cycles (bench.results.collector)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    baseline, current = load_for_judging(args.baseline), load_for_judging(args.current)
    _, policy = policy_from_args(args)
    c = compare(
        baseline,
        current,
        policy,
        timing=args.timing,
        baseline_label=str(args.baseline),
        current_label=str(args.current),
    )
    render = comparison_markdown if args.format == "md" else comparison_text
    if why := rules_mismatch(baseline, current):
        print(f"note: {why}")
    print(render(c, show_all=args.all), end="")
    return 0
