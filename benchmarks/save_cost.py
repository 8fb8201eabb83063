"""What rewriting results.json as cases finish costs the run's own process, replayed from a finished run.

A run rewrites its whole results file as cases finish (bench.runner.run). This replays that on a real run's
cases: the cases finish in the order and after the worker wall times their records hold, on a simulated
clock, and each write the policy asks for is a real `save` of the cases finished so far, timed (wall and CPU
of this process). Variants: `every` (a write after every case: what the run did before bench.runner.saving)
and `policy` (SaveClock with the default SavePolicy). --cases N repeats the run's cases under new ids up to
N, for a larger run of the same cases.

    python -m bench run scenarios --jobs 1 --out /tmp/ship1
    python benchmarks/save_cost.py /tmp/ship1/results.json --variants every,policy
    python benchmarks/save_cost.py /tmp/ship1/results.json --cases 1000 --variants policy

Not a test: figures for reports/performance/run_time.md. Writes into a temporary folder only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results.store import load, save  # noqa: E402
from bench.runner.saving import SaveClock, SavePolicy  # noqa: E402


def replay(results, cases: int, variant: str, folder: Path) -> dict:
    source = results.cases
    run = [
        dataclasses.replace(source[i % len(source)], case_id=f"{source[i % len(source)].case_id}#{i}")
        for i in range(cases)
    ]
    sim = {"now_s": 0.0}
    finished: list = []
    write_wall = write_cpu = 0.0

    def write() -> None:
        nonlocal write_wall, write_cpu
        w, c = time.perf_counter(), time.process_time()
        save(folder, dataclasses.replace(results, cases=tuple(finished)))
        took = time.perf_counter() - w
        write_wall += took
        write_cpu += time.process_time() - c
        sim["now_s"] += took  # the run's clock goes on while it writes

    policy = SavePolicy(share=float("inf")) if variant == "every" else SavePolicy()
    clock = SaveClock(policy=policy, clock=lambda: sim["now_s"])
    for case in run:
        sim["now_s"] += (case.worker.wall_s if case.worker and case.worker.wall_s else 0.0) or 0.0
        finished.append(case)
        clock.maybe(write)
    w = time.perf_counter()
    write()  # the final write
    final_s = time.perf_counter() - w
    return {
        "variant": variant,
        "cases": cases,
        "writes": clock.written + 1,
        "write_wall_s": write_wall,
        "write_cpu_s": write_cpu,
        "final_write_s": final_s,
        "run_s": sim["now_s"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a finished run's results.json (or its folder)")
    ap.add_argument("--cases", type=int, default=0, help="cases to replay (default: the run's own)")
    ap.add_argument("--variants", default="every,policy")
    args = ap.parse_args(argv)
    results = load(args.results)
    cases = args.cases or len(results.cases)
    variants = [v for v in args.variants.split(",") if v]
    if not results.cases or cases < 1 or not set(variants) <= {"every", "policy"}:
        ap.error("a run with cases, --cases >= 1, and --variants from every,policy")
    with tempfile.TemporaryDirectory() as tmp:  # the first save's imports, outside every figure
        save(Path(tmp), dataclasses.replace(results, cases=results.cases[:1]))
    print(f"{args.results}: {cases} cases replayed; loadavg {os.getloadavg()[0]:.2f}")
    for variant in variants:
        with tempfile.TemporaryDirectory() as tmp:
            r = replay(results, cases, variant, Path(tmp))
        print(
            f"  {variant:7s} {r['writes']} writes, {r['write_wall_s']:.1f} s wall ({r['write_cpu_s']:.1f} s CPU) "
            f"of writing over a {r['run_s']:.0f} s run: {100 * r['write_wall_s'] / r['run_s']:.1f} %; "
            f"the final write {r['final_write_s']:.2f} s"
        )
    print(f"  loadavg after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
