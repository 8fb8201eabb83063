"""Where a run's time goes, and how it grows with the number of cases.

Runs `peft-bench run` (a real CLI process, isolated workers) on 1, 2 and 4 copies of the fp32 eager
forward-latency case, fits wall = fixed + per_case * n, and reports each case's phases (process start and
imports, building/loading sources, loading the model, steps, references). Also the single-case budget:
one isolated forward-latency case (50+ timed calls after warm-up), wall time including its process start.

    python benchmarks/budget.py --out reports/performance
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _copies(n: int, folder: Path) -> Path:
    text = (REPO / "scenarios" / "forward_latency.toml").read_text()
    text = text.replace('compile = ["none", "aot_eager"]', 'compile = ["none"]')
    text = text.replace('[[steps]]\nop = "compile"\n\n', "")
    for i in range(n):
        (folder / f"latency_{i}.toml").write_text(
            text.replace('name = "forward-latency"', f'name = "latency-{i}"')
        )
    return folder


def _run(n: int, cache: Path, tmp: Path) -> dict:
    scen = _copies(n, tmp / f"scen{n}")
    out = tmp / f"out{n}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PEFT_BENCH_CACHE": str(cache)}
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench", "run", str(scen), "--out", str(out), "-q"],
        check=True,
        env=env,
        capture_output=True,
    )
    wall = time.perf_counter() - t0
    data = json.loads((out / "results.json").read_text())
    return {"n": n, "wall_s": wall, "cases": data["cases"], "parent_cpu_s": data["parent_cpu_s"]}


def _compile_cold_vs_warm(cache: Path, tmp: Path) -> dict[str, dict[str, float]]:
    """The inductor forward-latency case with an empty per-case inductor cache (cold), then twice with the
    shared one (the first fills it, the second is warm)."""
    from bench.runner.launch import RunOptions, run_one
    from bench.scenario import load_scenario
    from bench.spec.cases import expand

    tmp.mkdir(parents=True)
    text = (REPO / "scenarios" / "forward_latency.toml").read_text()
    path = tmp / "inductor.toml"
    path.write_text(text.replace('compile = ["none", "aot_eager"]', 'compile = ["inductor"]'))
    (case,) = expand(load_scenario(path))
    out = {}
    for label, mode in (("cold", "cold"), ("warm_fill", "warm"), ("warm", "warm")):
        r = run_one(case, RunOptions(out_dir=tmp / label, cache_root=cache, compile_cache=mode))
        forward = next(s for s in r.steps if s.op == "forward")
        out[label] = {
            "compile_s": r.phases_s.get("compile_s"),
            "first_call_ms": forward.first_call_ms,
            "case_wall_s": r.worker.wall_s,
        }
    return out


def _fork_vs_spawn(cache: Path, tmp: Path, n: int) -> dict:
    """The isolated forward case (fp32, eager) n times with each worker start method, interleaved so that
    load on the machine hits both alike. Wall = the parent's view of one worker, start to exit."""
    from bench.runner.launch import RunOptions, run_one
    from bench.scenario import load_scenario
    from bench.spec.cases import expand

    (case,) = expand(load_scenario(next(_copies(1, tmp / "scen").glob("*.toml"))))
    walls: dict[str, list[float]] = {"fork": [], "spawn": []}
    run_one(case, RunOptions(out_dir=tmp / "fill", cache_root=cache))  # fills the cache, starts the zygote
    for i in range(n):
        for method in ("fork", "spawn"):
            r = run_one(case, RunOptions(out_dir=tmp / f"{method}{i}", cache_root=cache, worker=method))
            assert r.verdict == "pass", r.reason
            assert r.worker.start_method == method
            walls[method].append(r.worker.wall_s)
    return {
        m: {"n": len(w), "median_s": statistics.median(w), "min_s": min(w), "max_s": max(w), "walls_s": w}
        for m, w in walls.items()
    }


def workers_only(out: Path, n: int) -> int:
    from bench.results.environment import collect
    from bench.spec.codec import to_dict

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "scen").mkdir()
        figures = _fork_vs_spawn(tmp / "cache", tmp, n)
    env = to_dict(collect())
    out.mkdir(parents=True, exist_ok=True)
    (out / "worker_start.json").write_text(
        json.dumps({"environment": env, "cases": figures}, indent=1) + "\n"
    )
    lines = [
        "# Worker start: forked from the preloaded worker vs spawned",
        "",
        f"`python benchmarks/budget.py --workers-only --n {n}`; {env['cpu']} x{env['cpu_count']}, "
        f"torch {env['libraries']['torch']}. One isolated forward-latency case (fp32, eager), wall time of its "
        "worker as the parent sees it (start to exit), the two methods interleaved.",
        "",
        "| worker | n | median s | min s | max s |",
        "|---|---|---|---|---|",
        *[
            f"| {m} | {f['n']} | {f['median_s']:.2f} | {f['min_s']:.2f} | {f['max_s']:.2f} |"
            for m, f in figures.items()
        ],
    ]
    (out / "worker_start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "reports" / "performance")
    p.add_argument("--sizes", default="1,2,4")
    p.add_argument("--workers-only", action="store_true", help="only the fork vs spawn worker comparison")
    p.add_argument("--n", type=int, default=5, help="cases per worker start method (with --workers-only)")
    args = p.parse_args(argv)
    if args.workers_only:
        return workers_only(args.out, args.n)
    from bench.results.environment import collect
    from bench.spec.codec import to_dict

    sizes = [int(x) for x in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        (tmp / "warm" / "scen1").mkdir(parents=True)
        _run(1, cache, tmp / "warm")  # fill the cache first: building sources is not the per-case cost
        runs = []
        for n in sizes:
            (tmp / str(n)).mkdir()
            (tmp / str(n) / f"scen{n}").mkdir()
            runs.append(_run(n, cache, tmp / str(n)))
        compile_costs = _compile_cold_vs_warm(cache, tmp / "compile")
    xs = [r["n"] for r in runs]
    ys = [r["wall_s"] for r in runs]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    per_case = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=False)) / sum((x - mx) ** 2 for x in xs)
    fixed = my - per_case * mx
    case_walls = [c["worker"]["wall_s"] for r in runs for c in r["cases"]]
    phases: dict[str, list[float]] = {}
    for r in runs:
        for c in r["cases"]:
            for k, v in c["phases_s"].items():
                phases.setdefault(k, []).append(v)
    timed = [s["timing"]["n"] for r in runs for c in r["cases"] for s in c["steps"] if s["timing"]]
    env = to_dict(collect())
    result = {
        "environment": env,
        "runs": [{k: v for k, v in r.items() if k != "cases"} for r in runs],
        "fit": {"fixed_s": fixed, "per_case_s": per_case},
        "case_wall_s": case_walls,
        "phases_median_s": {k: statistics.median(v) for k, v in phases.items()},
        "inductor_compile": compile_costs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "budget.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Run time: budget and scaling",
        "",
        f"`python benchmarks/budget.py`; {env['cpu']} x{env['cpu_count']}, torch {env['libraries']['torch']}.",
        "",
        f"One isolated forward-latency case (fp32, eager, {min(timed)}+ timed calls after 10 warm-up calls), "
        f"wall time of its worker process including process start: median {statistics.median(case_walls):.2f} s, "
        f"max {max(case_walls):.2f} s over n={len(case_walls)}.",
        "",
        "| cases | run wall s | parent CPU s |",
        "|---|---|---|",
        *[f"| {r['n']} | {r['wall_s']:.2f} | {r['parent_cpu_s']:.3f} |" for r in runs],
        "",
        f"Fit: wall = {fixed:.2f} s + {per_case:.2f} s x cases (the fixed part is the CLI process: imports, "
        "environment, selection).",
        "",
        "Median phases of one case (s): "
        + ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in result["phases_median_s"].items()),
        "",
        "Inductor compile of the same case (`--compile-cache cold` gives each case an empty inductor cache):",
        "",
        "| inductor cache | compile_s (dynamo metrics) | first call ms | case wall s |",
        "|---|---|---|---|",
        *[
            f"| {k} | {v['compile_s']:.2f} | {v['first_call_ms']:.0f} | {v['case_wall_s']:.2f} |"
            for k, v in compile_costs.items()
        ],
    ]
    (args.out / "budget.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
