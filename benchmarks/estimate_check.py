"""How far the cost estimate is from a measured run, per case and in total; and the coefficients a run fits.

Reads a results file, rebuilds each case's features from the case it records, and prints the estimate with
the built-in defaults (or with coefficients fitted to another run) against what each case took.

    python benchmarks/estimate_check.py reports/run-X/results.json             # defaults vs measured
    python benchmarks/estimate_check.py B/results.json --fit-on A/results.json  # calibrated on run A
    python benchmarks/estimate_check.py A/results.json --fit-only --target cpu   # the coefficients A fits
    python benchmarks/estimate_check.py --recorded $PEFT_BENCH_CACHE/estimate-calibration.jsonl
        # the estimate each recorded run printed before it started, against what it measured

`--target cpu` fits the workers' CPU time instead of their wall time: on a loaded machine the wall time holds
the other load, while one thread per job makes the CPU time what a quiet machine's wall time would be.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.estimate.calibration import MEASURED_VERDICTS, peak_rss_bytes, read_runs  # noqa: E402
from bench.estimate.features import case_features  # noqa: E402
from bench.estimate.model import (  # noqa: E402
    DEFAULTS,
    Sample,
    calibrate,
    makespan_s,
    predict_rss_bytes,
    predict_wall_s,
)
from bench.estimate.params import parameter_count  # noqa: E402
from bench.results.store import load  # noqa: E402
from bench.spec.cases import Case  # noqa: E402


def samples(path: str, target: str) -> list[Sample]:
    results = load(path)
    out = []
    for r in results.cases:
        if r.verdict not in MEASURED_VERDICTS or not r.case:
            continue
        case = Case.from_dict(r.case)
        f = case_features(case, parameter_count(case.scenario.model))
        measured = r.worker.cpu_s if target == "cpu" else r.worker.wall_s
        if f.vector() is None or not measured:
            continue
        out.append(Sample(r.case_id, f.vector(), f.weight_bytes, measured, peak_rss_bytes(r), results.jobs))
    return out


def recorded(path: str) -> int:
    """Per run in the file: its estimate made before it started against what it measured, case by case."""
    for run in read_runs(Path(path)):
        print(f"\n## {run.results} ({run.finished_at}, {run.jobs} job(s))\n")
        print(
            "| case | predicted s | measured s | ratio | predicted RSS MiB | peak RSS MiB |\n|---|---|---|---|---|---|"
        )
        ratios = []
        for s in run.cases:
            if s.estimate_wall_s is None:
                continue
            ratios.append(s.estimate_wall_s / s.wall_s)
            peak = f"{s.peak_rss_bytes / 2**20:.0f}" if s.peak_rss_bytes else "-"
            print(
                f"| {s.case_id} | {s.estimate_wall_s:.1f} | {s.wall_s:.1f} | {ratios[-1]:.2f} "
                f"| {(s.estimate_rss_bytes or 0) / 2**20:.0f} | {peak} |"
            )
        ratios.sort()
        if ratios:
            print(
                f"\ncases: {len(ratios)}; predicted/measured per case: median {ratios[len(ratios) // 2]:.2f}, "
                f"range {ratios[0]:.2f}-{ratios[-1]:.2f}; within 2x: {sum(0.5 <= r <= 2 for r in ratios)}"
            )
        print(
            f"sum of cases: predicted {sum(s.estimate_wall_s or 0 for s in run.cases):.0f} s, "
            f"measured {sum(s.wall_s for s in run.cases):.0f} s"
        )
        if run.estimate_total_s and run.measured_total_s:
            print(
                f"run: predicted {run.estimate_total_s:.0f} s, measured {run.measured_total_s:.0f} s, "
                f"{run.estimate_total_s / run.measured_total_s:.2f}x"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?")
    p.add_argument("--recorded", help="a calibration file: each run's own estimate against its measurement")
    p.add_argument("--fit-on", help="calibrate on this results file first (default: the built-in defaults)")
    p.add_argument(
        "--fit-only", action="store_true", help="print the coefficients RESULTS fits, nothing else"
    )
    p.add_argument("--target", choices=("wall", "cpu"), default="wall")
    p.add_argument("--measured-total-s", type=float, help="the run's own wall time, for the total's ratio")
    args = p.parse_args(argv)
    if args.recorded:
        return recorded(args.recorded)
    if not args.results:
        p.error("give a results file or --recorded FILE")
    measured = samples(args.results, args.target)
    if args.fit_only:
        c = calibrate(measured, [])
        for name, value in c.wall_s.items():
            print(f"{name:20s} {value:.4g}")
        print(
            f"rss_base_bytes       {c.rss_base_bytes:.4g}\nrss_per_weight_byte  {c.rss_per_weight_byte:.4g}"
        )
        return 0
    c = calibrate(samples(args.fit_on, args.target), []) if args.fit_on else DEFAULTS
    print(
        "| case | predicted s | measured s | ratio | predicted RSS MiB | peak RSS MiB |\n|---|---|---|---|---|---|"
    )
    ratios = []
    for s in measured:
        wall = predict_wall_s(s.features, c)
        rss = predict_rss_bytes(s.weight_bytes, c)
        ratios.append(wall / s.wall_s)
        peak = f"{s.peak_rss_bytes / 2**20:.0f}" if s.peak_rss_bytes else "-"
        print(
            f"| {s.case_id} | {wall:.1f} | {s.wall_s:.1f} | {wall / s.wall_s:.2f} | {rss / 2**20:.0f} | {peak} |"
        )
    jobs = measured[0].jobs if measured else 1
    predicted_total = c.run_overhead_s + makespan_s([predict_wall_s(s.features, c) for s in measured], jobs)
    ratios.sort()
    print(
        f"\ncases: {len(measured)}; predicted/measured per case: median {ratios[len(ratios) // 2]:.2f}, "
        f"range {ratios[0]:.2f}-{ratios[-1]:.2f}; within 2x: {sum(0.5 <= r <= 2 for r in ratios)}"
    )
    print(
        f"sum of cases: predicted {sum(predict_wall_s(s.features, c) for s in measured):.0f} s, measured "
        f"{sum(s.wall_s for s in measured):.0f} s"
    )
    line = f"run on {jobs} job(s): predicted {predicted_total:.0f} s"
    if args.measured_total_s:
        line += f", measured {args.measured_total_s:.0f} s, {predicted_total / args.measured_total_s:.2f}x"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
