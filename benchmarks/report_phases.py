"""Where `peft-bench report` spends its wall time: loading the records, writing the reports, freeing the records.

The same steps as the command (bench.cli.commands.report: its load_frozen, then
bench.report.build.write_reports), each timed by the clock of this process, n rounds, each in a
fresh process (a load's helper and the drawing helper start as they do for the command).

    python benchmarks/report_phases.py /tmp/r20k/results.json --rounds 3

The files come from `benchmarks/results_scale.py` (its `build`) or any run; the reports are written into a
temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHASES = ("load_s", "report_s", "free_s")


def one_round(results: Path, out: Path) -> dict[str, float]:
    """The command's steps, timed (run in a process of its own: `--one`)."""
    from bench.cli.commands.report import load_frozen
    from bench.report.build import write_reports

    t0 = time.perf_counter()
    loaded = load_frozen(results)
    t1 = time.perf_counter()
    write_reports(loaded, out, results_dir=results.parent)
    t2 = time.perf_counter()
    del loaded  # what the command's process does as it returns
    t3 = time.perf_counter()
    gc.unfreeze()
    return {"load_s": t1 - t0, "report_s": t2 - t1, "free_s": t3 - t2}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a results.json (its columnar copy beside it is used)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a round's reports folder: run one round here
    args = p.parse_args(argv)
    if not args.results.is_file():
        p.error(f"{args.results}: no such results file")
    if args.one is not None:
        print(json.dumps(one_round(args.results, args.one)))
        return 0
    rounds = []
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                [sys.executable, __file__, str(args.results), "--one", tmp],
                capture_output=True,
                text=True,
                cwd=REPO,
                check=True,
            )
        rounds.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.results}: n = {len(rounds)}, loadavg {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    for phase in PHASES:
        values = [r[phase] for r in rounds]
        print(f"  {phase:9s} {statistics.median(values):6.2f} [{min(values):.2f}, {max(values):.2f}]")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
