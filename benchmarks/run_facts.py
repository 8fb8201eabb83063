"""Where a run's time went, read back from its results.json: the figures the README quotes about a run.

    python -m bench run scenarios --jobs 1 --out /tmp/ship1
    python benchmarks/run_facts.py /tmp/ship1/results.json

Prints, from the records alone (nothing is timed here):
- the workers' wall time, and of it dynamo/inductor compiles and references (`phases_s`), with the cases per
  compile backend and their median compile time;
- the run's own process: its CPU time (`parent_cpu_s`) against the workers' (`worker.cpu_s`);
- the timing policies' outcome: per forward step with timings, grouped by its case's timing policy, the
  number of timed calls and IQR/median;
- each plain adapter load and each hotswap against the plain copy of as many bytes (`op_time_ms / copy_floor_ms`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.judge.figures import is_hotswap  # noqa: E402
from bench.results.store import load  # noqa: E402


def _spread(values: list[float], fmt: str = ".3g") -> str:
    if not values:
        return "none"
    return f"median {statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}], n = {len(values)}"


def facts(path: Path) -> list[str]:
    results = load(path)
    cases = results.cases
    walls = [c.worker.wall_s for c in cases if c.worker and c.worker.wall_s is not None]
    cpus = [c.worker.cpu_s for c in cases if c.worker and c.worker.cpu_s is not None]
    phase = defaultdict(float)
    for c in cases:
        for name, s in (c.phases_s or {}).items():
            phase[name] += s or 0.0
    compile_by_backend: dict[str, list[float]] = defaultdict(list)
    for c in cases:
        backend = c.params.get("compile", "?")
        if backend != "none" and (c.phases_s or {}).get("compile_s"):
            compile_by_backend[backend].append(c.phases_s["compile_s"])
    lines = [
        f"{path}: {len(cases)} cases, jobs {results.jobs}",
        f"workers' wall {sum(walls):.0f} s; compile {phase['compile_s']:.0f} s, references "
        f"{phase['references_s']:.0f} s, process start and imports {phase['process_start_and_imports_s']:.0f} s",
    ]
    for backend, secs in sorted(compile_by_backend.items()):
        lines.append(f"  {backend}: {len(secs)} compiled cases, compile s {_spread(secs)}")
    if results.parent_cpu_s is not None and cpus:
        share = 100 * results.parent_cpu_s / sum(cpus)
        lines.append(
            f"run's process CPU {results.parent_cpu_s:.2f} s against the workers' {sum(cpus):.0f} s: {share:.2f} %"
        )
    by_policy: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for c in cases:
        tp = c.timing_policy
        policy = (
            f"warmup {tp.warmup}, min_rounds {tp.min_rounds}, min_time_s {tp.min_time_s}" if tp else "none"
        )
        for s in c.steps:
            if s.op == "forward" and s.timing is not None and s.timing.n and s.timing.median_ms:
                n_calls, spread = by_policy[policy]
                n_calls.append(float(s.timing.n))
                if s.timing.iqr_ms is not None:
                    spread.append(s.timing.iqr_ms / s.timing.median_ms)
    for policy, (n_calls, spread) in sorted(by_policy.items()):
        lines.append(
            f"forward steps, timing policy {policy}: timed calls {_spread(n_calls, '.0f')}; "
            f"IQR/median {_spread(spread)}"
        )
    for kind, swap in (("plain load", False), ("hotswap", True)):
        ratios, sizes = [], []
        for c in cases:
            for s in c.steps:
                if s.copy_floor_ms and s.op_time_ms is not None and is_hotswap(s) is swap:
                    ratios.append(s.op_time_ms / s.copy_floor_ms)
                    sizes.append(s.adapter_bytes or 0)
        if ratios:
            biggest = max(range(len(sizes)), key=sizes.__getitem__)
            lines.append(
                f"{kind} over its copy floor: {_spread(ratios)}; the largest adapter "
                f"({sizes[biggest] / 2**20:.2f} MiB): {ratios[biggest]:.0f}x"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a results.json (or its folder)")
    args = ap.parse_args(argv)
    print("\n".join(facts(args.results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
