"""The estimate's options and output for `list --estimate` and `run`: the table, the line before a run, the
--max-minutes refusal (exit 2 before any case starts) and the calibration line appended after the run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import BenchInputError
from bench.estimate.plan import Estimate, estimate, over_budget, record_run, uncounted_under_budget
from bench.estimate.text import run_line, table
from bench.results.records import Results

DEVICE_DEFAULT = "default"  # the machine key's device where --device is not given: the workers' own choice


def add_max_minutes(parser: argparse.ArgumentParser, positive_float) -> None:
    parser.add_argument(
        "--max-minutes",
        type=positive_float,
        metavar="M",
        help="refuse (exit 2, before any case starts) a selection whose estimated run time is over M minutes "
        "(the estimate: `peft-bench list --estimate`)",
    )


def list_estimate(args: argparse.Namespace, cases, cache: Path, jobs: int) -> int:
    """`list --estimate`: the table; a calibration file that cannot be read is exit 2 naming it."""
    est = estimate(cases, cache, args.device or DEVICE_DEFAULT, jobs, strict=True)
    print(table(est))
    if why := over_budget(est, args.max_minutes):
        raise BenchInputError(why)
    _warn_uncounted(est, args.max_minutes)
    return 0


def _warn_uncounted(est: Estimate, max_minutes: float | None) -> None:
    if note := uncounted_under_budget(est, max_minutes):
        print(f"peft-bench: warning: {note}", file=sys.stderr)


def before_run(args: argparse.Namespace, cases, cache: Path, jobs: int) -> Estimate:
    """The estimate of the cases a run will run: its line (unless -q), a refusal over --max-minutes, and a
    warning (never a refusal) for a calibration file that cannot be read."""
    est = estimate(cases, cache, args.device or DEVICE_DEFAULT, jobs, strict=False)
    if est.problem:
        print(f"peft-bench: warning: {est.problem}; the estimate uses the built-in defaults", file=sys.stderr)
    if why := over_budget(est, args.max_minutes):
        raise BenchInputError(why)
    _warn_uncounted(est, args.max_minutes)
    if not args.quiet:
        print(run_line(est), flush=True)
    return est


def after_run(
    args: argparse.Namespace, est: Estimate, results: Results, *, cache: Path, ran, wall_s: float, out_dir
) -> None:
    """Append the run to the calibration file. Its failure costs the run nothing: a warning, never an exit."""
    try:
        note = record_run(
            est,
            results,
            cache_root=cache,
            device=args.device or DEVICE_DEFAULT,
            ran=ran,
            measured_total_s=wall_s,
            results_path=str(Path(out_dir) / "results.json"),
        )
    except (OSError, BenchInputError) as exc:
        note = f"could not record this run for the estimate: {exc}"
    if note:
        print(f"peft-bench: warning: {note}", file=sys.stderr)
