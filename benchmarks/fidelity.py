"""Does the suite change what it measures? Its reported forward median against a bare perf_counter loop.

For the same model, adapter and inputs, alternate K times: one isolated peft-bench case per worker start
method (forked from the preloaded worker, and spawned as a fresh `python -m bench.worker`, exactly as
`peft-bench run --worker fork|spawn` starts them) and one bare script (its own process: from_pretrained,
load_adapter, optional torch.compile, warm-up, a hand-written perf_counter loop). Interleaving spreads the
machine's drift over all of them. The figures are median(suite medians) / median(bare medians) per start
method, eager and compiled, with the spread of the per-pair ratios, and forked over spawned within each pair:
a fork that distorted timings (a zygote's threads, a warm allocator, shared pages) would show there. The
parent's CPU time while the suite's cases run is reported too.

    python benchmarks/fidelity.py --pairs 5 --out reports/fidelity
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BARE = r"""
import sys, time, statistics, torch
from transformers import AutoModelForCausalLM
base, adapter, backend, warmup, calls, batch, seq, seed = sys.argv[1:9]
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
model.load_adapter(adapter, adapter_name="r8")
model.requires_grad_(False)
torch.set_grad_enabled(False)
gen = torch.Generator().manual_seed(int(seed))
ids = torch.randint(3, 1000, (int(batch), int(seq)), generator=gen)
mask = torch.ones_like(ids)
fn = model if backend == "none" else torch.compile(model, backend=backend)
fn(input_ids=ids, attention_mask=mask)
for _ in range(int(warmup)):
    fn(input_ids=ids, attention_mask=mask)
samples = []
for _ in range(int(calls)):
    t0 = time.perf_counter()
    fn(input_ids=ids, attention_mask=mask)
    samples.append((time.perf_counter() - t0) * 1000.0)
print(statistics.median(samples))
"""


def _suite_case(scenario_path: Path, backend: str, cache_root: Path, out_dir: Path, worker: str):
    from bench.runner.launch import RunOptions, run_one
    from bench.scenario import load_scenario
    from bench.spec.cases import expand

    (case,) = [c for c in expand(load_scenario(scenario_path)) if c.compile.label == backend]
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = run_one(case, RunOptions(out_dir=out_dir, cache_root=cache_root, worker=worker))
    if result.worker.start_method != worker:
        raise SystemExit(f"asked for a {worker} worker, the case ran {result.worker.start_method}")
    after = resource.getrusage(resource.RUSAGE_SELF)
    parent_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    forward = next(s for s in result.steps if s.op == "forward")
    return forward.timing, result, parent_cpu_s


def _pinned_forward(case, cache_root: Path, out_dir: Path, cpus: tuple[int, ...]) -> float:
    from bench.runner.launch import RunOptions, run_one

    result = run_one(case, RunOptions(out_dir=out_dir, cache_root=cache_root, worker="fork", cpus=cpus))
    if result.verdict != "pass" or result.worker.cpus != cpus:
        raise SystemExit(f"the pinned case did not pass on {cpus}: {result.verdict} {result.reason}")
    return next(s for s in result.steps if s.op == "forward").timing.median_ms


def _jobs_rounds(scenario_path: Path, backend: str, cache_root: Path, tmp: Path, rounds: int) -> dict | None:
    """What `--jobs 2` does to a forward median: per round, the case pinned to one core running alone, then
    two copies at once, one per core (each pinned, one torch thread), as run_parallel runs them."""
    import threading

    from bench.runner.jobs import core_groups, usable_cpus
    from bench.scenario import load_scenario
    from bench.spec.cases import expand

    cpus = usable_cpus()
    if len(cpus) < 2:
        return None
    groups = core_groups(2, cpus)
    (case,) = [c for c in expand(load_scenario(scenario_path)) if c.compile.label == backend]
    from bench.runner.launch import shared_zygotes_for

    # Each job's preloaded worker started from this thread (a zygote started from a job thread would die
    # with it: PR_SET_PDEATHSIG), as run_parallel does.
    shared_zygotes_for(groups)
    alone, together = [], []
    for r in range(rounds):
        alone.append(_pinned_forward(case, cache_root, tmp / f"alone-{r}", groups[0]))
        got: dict[int, float] = {}

        def job(k: int, group: tuple[int, ...], r: int = r, got: dict = got) -> None:
            got[k] = _pinned_forward(case, cache_root, tmp / f"job{k}-{r}", group)

        threads = [threading.Thread(target=job, args=(k, g)) for k, g in enumerate(groups)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        together.append(statistics.median(got.values()))
    ratios = [b / a for a, b in zip(alone, together, strict=True)]
    return {
        "rounds": rounds,
        "groups": groups,
        "alone_median_ms": alone,
        "together_median_ms": together,
        "ratio_of_medians": statistics.median(together) / statistics.median(alone),
        "round_ratio_min": min(ratios),
        "round_ratio_max": max(ratios),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=5, help="suite/bare pairs per mode")
    p.add_argument("--modes", default="none,aot_eager", help="compile backends to compare (none = eager)")
    p.add_argument("--workers", default="fork,spawn", help="worker start methods to compare (fork, spawn)")
    p.add_argument(
        "--jobs-rounds", type=int, default=5, help="rounds of one pinned case alone vs two at once"
    )
    p.add_argument("--out", type=Path, default=REPO / "reports" / "fidelity")
    p.add_argument("--cache", type=Path, help="model/adapter cache (default $PEFT_BENCH_CACHE)")
    args = p.parse_args(argv)

    from bench.engine.sources.adapters import resolve_adapter
    from bench.engine.sources.cache import default_cache_root
    from bench.engine.sources.models import resolve_model
    from bench.results.environment import collect
    from bench.scenario import load_scenario
    from bench.spec.codec import to_dict

    cache_root = args.cache or default_cache_root()
    scenario_path = REPO / "scenarios" / "forward_latency.toml"
    scenario = load_scenario(scenario_path)
    base = resolve_model(scenario.model, cache_root)
    adapter = resolve_adapter(scenario.adapter("r8"), base, cache_root)
    w, t = scenario.workload, scenario.timing
    workers = args.workers.split(",")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.modes.split(","):
            per = {
                w: {"suite_ms": [], "parent_cpu": [], "worker_cpu": [], "spreads": [], "wall_s": []}
                for w in workers
            }
            bare_ms = []
            for _ in range(args.pairs):
                for worker in workers:
                    timing, result, pcpu = _suite_case(scenario_path, backend, cache_root, Path(tmp), worker)
                    per[worker]["suite_ms"].append(timing.median_ms)
                    per[worker]["spreads"].append(timing.iqr_over_median)
                    per[worker]["parent_cpu"].append(pcpu)
                    per[worker]["worker_cpu"].append(
                        result.worker.cpu_s if result.worker.cpu_s is not None else float("nan")
                    )
                    per[worker]["wall_s"].append(
                        result.worker.wall_s if result.worker.wall_s is not None else float("nan")
                    )
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        BARE,
                        base.location,
                        adapter.location,
                        backend,
                        str(t.warmup),
                        str(max(t.min_rounds, timing.n)),
                        str(w.batch_size),
                        str(w.seq_len),
                        str(w.seed),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "PYTHONPATH": ""},
                )
                bare_ms.append(float(out.stdout.strip().splitlines()[-1]))
            for worker, m in per.items():
                pair_ratios = [s / b for s, b in zip(m["suite_ms"], bare_ms, strict=True)]
                rows[f"{backend}/{worker}"] = {
                    "mode": backend,
                    "worker": worker,
                    "pairs": args.pairs,
                    "suite_median_ms": m["suite_ms"],
                    "bare_median_ms": bare_ms,
                    "ratio_of_medians": statistics.median(m["suite_ms"]) / statistics.median(bare_ms),
                    "pair_ratio_min": min(pair_ratios),
                    "pair_ratio_max": max(pair_ratios),
                    "suite_iqr_over_median": statistics.median(m["spreads"]),
                    "case_wall_s_median": statistics.median(m["wall_s"]),
                    "parent_cpu_s": statistics.median(m["parent_cpu"]),
                    "worker_cpu_s": statistics.median(m["worker_cpu"]),
                    "parent_cpu_share": statistics.median(m["parent_cpu"])
                    / statistics.median(m["worker_cpu"]),
                }
            if {"fork", "spawn"} <= set(per):
                ratios = [
                    f / s for f, s in zip(per["fork"]["suite_ms"], per["spawn"]["suite_ms"], strict=True)
                ]
                rows[f"{backend}/fork"]["fork_over_spawn_pair_ratios"] = ratios
        jobs = {
            b: _jobs_rounds(scenario_path, b, cache_root, Path(tmp), args.jobs_rounds)
            for b in args.modes.split(",")
        }
    env = to_dict(collect())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity.json").write_text(
        json.dumps({"environment": env, "modes": rows, "jobs": jobs}, indent=1) + "\n"
    )
    lines = [
        "# Fidelity: the suite's forward median over a bare perf_counter loop",
        "",
        f"`python benchmarks/fidelity.py --pairs {args.pairs} --workers {args.workers}`; {env['cpu']} "
        f"x{env['cpu_count']}, torch {env['libraries']['torch']}, transformers {env['libraries']['transformers']}, "
        f"peft {env['libraries']['peft']}. Each pair: one isolated suite case per worker start method and one "
        "bare script, interleaved; the bare script is a fresh process.",
        "",
        "| mode | worker | pairs | suite median ms | bare median ms | ratio of medians | per-pair ratio range "
        "| suite IQR/median | case wall s | parent CPU / worker CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        lines.append(
            f"| {'eager' if r['mode'] == 'none' else r['mode']} | {r['worker']} | {r['pairs']} | "
            f"{statistics.median(r['suite_median_ms']):.3f} | {statistics.median(r['bare_median_ms']):.3f} | "
            f"{r['ratio_of_medians']:.3f} | {r['pair_ratio_min']:.3f} - {r['pair_ratio_max']:.3f} | "
            f"{r['suite_iqr_over_median']:.3f} | {r['case_wall_s_median']:.2f} | {r['parent_cpu_share']:.4f} |"
        )
    fork_rows = [r for r in rows.values() if "fork_over_spawn_pair_ratios" in r]
    if fork_rows:
        lines += ["", "Forked over spawned, the same pair's forward medians:", ""]
        lines += ["| mode | median ratio | range |", "|---|---|---|"]
        for r in fork_rows:
            q = r["fork_over_spawn_pair_ratios"]
            lines.append(
                f"| {'eager' if r['mode'] == 'none' else r['mode']} | {statistics.median(q):.3f} | "
                f"{min(q):.3f} - {max(q):.3f} |"
            )
    if any(jobs.values()):
        lines += [
            "",
            f"Two jobs at once (`--jobs 2`): the forward median of one case pinned to one core and one torch "
            f"thread, running alone, against two copies running together, one per core "
            f"(`--jobs-rounds {args.jobs_rounds}`, alone and together interleaved per round):",
            "",
            "| mode | rounds | alone median ms | together median ms | ratio of medians | per-round ratio range |",
            "|---|---|---|---|---|---|",
        ]
        for backend, j in jobs.items():
            if j:
                lines.append(
                    f"| {'eager' if backend == 'none' else backend} | {j['rounds']} | "
                    f"{statistics.median(j['alone_median_ms']):.3f} | {statistics.median(j['together_median_ms']):.3f} | "
                    f"{j['ratio_of_medians']:.3f} | {j['round_ratio_min']:.3f} - {j['round_ratio_max']:.3f} |"
                )
    else:
        lines += ["", "Two jobs at once: not measured (fewer than two usable cores)."]
    (args.out / "fidelity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
