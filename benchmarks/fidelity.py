"""Does the suite change what it measures? Its reported forward median against a bare perf_counter loop.

For the same model, adapter and inputs, alternate K times: one isolated peft-bench case (its own worker
process, exactly as `peft-bench run` starts it) and one bare script (its own process: from_pretrained,
load_adapter, optional torch.compile, warm-up, a hand-written perf_counter loop). Interleaving spreads the
machine's drift over both. The figure is median(suite medians) / median(bare medians), eager and compiled,
with the spread of the per-pair ratios. The parent's CPU time while the suite's cases run is reported too.

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


def _suite_case(scenario_path: Path, backend: str, cache_root: Path, out_dir: Path):
    from bench.cases import expand
    from bench.run import RunOptions, run_one
    from bench.scenario import load_scenario

    (case,) = [c for c in expand(load_scenario(scenario_path)) if c.compile.label == backend]
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = run_one(case, RunOptions(out_dir=out_dir, cache_root=cache_root))
    after = resource.getrusage(resource.RUSAGE_SELF)
    parent_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    forward = next(s for s in result.steps if s.op == "forward")
    return forward.timing, result, parent_cpu_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=5, help="suite/bare pairs per mode")
    p.add_argument("--modes", default="none,aot_eager", help="compile backends to compare (none = eager)")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "fidelity")
    p.add_argument("--cache", type=Path, help="model/adapter cache (default $PEFT_BENCH_CACHE)")
    args = p.parse_args(argv)

    from bench.environment import collect
    from bench.records import to_dict
    from bench.scenario import load_scenario
    from bench.sources.adapters import resolve_adapter
    from bench.sources.cache import default_cache_root
    from bench.sources.models import resolve_model

    cache_root = args.cache or default_cache_root()
    scenario_path = REPO / "scenarios" / "forward_latency.toml"
    scenario = load_scenario(scenario_path)
    base = resolve_model(scenario.model, cache_root)
    adapter = resolve_adapter(scenario.adapter("r8"), base, cache_root)
    w, t = scenario.workload, scenario.timing
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.modes.split(","):
            suite_ms, bare_ms, parent_cpu, worker_cpu, spreads = [], [], [], [], []
            for _ in range(args.pairs):
                timing, result, pcpu = _suite_case(scenario_path, backend, cache_root, Path(tmp))
                suite_ms.append(timing.median_ms)
                spreads.append(timing.iqr_over_median)
                parent_cpu.append(pcpu)
                worker_cpu.append(result.worker.cpu_s if result.worker.cpu_s is not None else float("nan"))
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
            pair_ratios = [s / b for s, b in zip(suite_ms, bare_ms, strict=False)]
            rows[backend] = {
                "pairs": args.pairs,
                "suite_median_ms": suite_ms,
                "bare_median_ms": bare_ms,
                "ratio_of_medians": statistics.median(suite_ms) / statistics.median(bare_ms),
                "pair_ratio_min": min(pair_ratios),
                "pair_ratio_max": max(pair_ratios),
                "suite_iqr_over_median": statistics.median(spreads),
                "parent_cpu_s": statistics.median(parent_cpu),
                "worker_cpu_s": statistics.median(worker_cpu),
                "parent_cpu_share": statistics.median(parent_cpu) / statistics.median(worker_cpu),
            }
    env = to_dict(collect())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity.json").write_text(json.dumps({"environment": env, "modes": rows}, indent=1) + "\n")
    lines = [
        "# Fidelity: the suite's forward median over a bare perf_counter loop",
        "",
        f"`python benchmarks/fidelity.py --pairs {args.pairs}`; {env['cpu']} x{env['cpu_count']}, torch "
        f"{env['libraries']['torch']}, transformers {env['libraries']['transformers']}, peft "
        f"{env['libraries']['peft']}. Each pair: one isolated suite case, one bare script, both fresh processes.",
        "",
        "| mode | pairs | suite median ms | bare median ms | ratio of medians | per-pair ratio range | suite IQR/median | parent CPU / worker CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend, r in rows.items():
        lines.append(
            f"| {'eager' if backend == 'none' else backend} | {r['pairs']} | {statistics.median(r['suite_median_ms']):.3f} | "
            f"{statistics.median(r['bare_median_ms']):.3f} | {r['ratio_of_medians']:.3f} | "
            f"{r['pair_ratio_min']:.3f} - {r['pair_ratio_max']:.3f} | {r['suite_iqr_over_median']:.3f} | "
            f"{r['parent_cpu_share']:.4f} |"
        )
    (args.out / "fidelity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
