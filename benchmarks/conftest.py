"""Fixtures for the pytest-benchmark micro-benchmarks: real tiny models and adapters, built once per session.

Run: `pytest benchmarks/ --benchmark-only` (add `--benchmark-autosave`, then `--benchmark-compare` on a later
run; `--benchmark-json out.json` for CI). `--bench-rounds N` sets the timed rounds of every benchmark.
Models and adapters are built into $PEFT_BENCH_CACHE (default ~/.cache/peft-bench), like `peft-bench run`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.spec.schema import AdapterSpec, Workload

MODEL = "builtin:tiny-llama"
# Two adapters of one shape (same rank, alpha and targets): every path can swap between them, so each
# benchmark times the operation itself and not an upstream limitation (the scenarios check those).
ADAPTERS = (
    AdapterSpec(key="bench_a", rank=8, alpha=16, targets=("q_proj", "v_proj"), seed=101, init_std=0.1),
    AdapterSpec(key="bench_b", rank=8, alpha=16, targets=("q_proj", "v_proj"), seed=102, init_std=0.1),
)
WORKLOAD = Workload(kind="forward", batch_size=2, seq_len=16)
LIBRARIES = ("torch", "transformers", "peft", "accelerate")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-rounds", type=int, default=20, help="timed rounds per benchmark (default 20)")


def pytest_benchmark_update_machine_info(config, machine_info: dict[str, Any]) -> None:
    # The versions decide what a figure means; --benchmark-json and --benchmark-compare carry them.
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    machine_info["peft_bench_libraries"] = versions
    import torch

    # CPU timings depend on the intra-op thread count, and collapse when other processes take the cores.
    machine_info["peft_bench_torch_threads"] = torch.get_num_threads()


@dataclass(frozen=True)
class Sources:
    model_location: str
    adapter_locations: dict[str, str]
    adapter_bytes: dict[str, int]
    device: str


@pytest.fixture(scope="session")
def sources() -> Sources:
    from bench.engine.footprint import adapter_file_bytes
    from bench.engine.sources.adapters import resolve_adapter
    from bench.engine.sources.cache import default_cache_root
    from bench.engine.sources.models import resolve_model
    from bench.worker.execute import pick_device

    cache = default_cache_root()
    model = resolve_model(MODEL, cache)
    locations = {a.key: resolve_adapter(a, model, cache).location for a in ADAPTERS}
    return Sources(
        model_location=model.location,
        adapter_locations=locations,
        adapter_bytes={k: adapter_file_bytes(v) for k, v in locations.items()},
        device=pick_device(),
    )


@pytest.fixture
def rounds(request) -> int:
    return max(1, request.config.getoption("--bench-rounds"))


@pytest.fixture
def fresh_model(sources):
    """A freshly loaded base model per benchmark (benchmarks change adapter state); dynamo starts clean."""
    from bench.engine.model import load_model
    from bench.engine.probes.compile import configure_dynamo_for_counting

    configure_dynamo_for_counting()
    model = load_model(sources.model_location, "fp32", sources.device)
    yield model
    configure_dynamo_for_counting()  # drop compiled graphs that hold this model


@pytest.fixture
def inputs(sources, fresh_model):
    from bench.engine.model import make_inputs, vocab_size_of

    return make_inputs(WORKLOAD, vocab_size_of(fresh_model), sources.device)


def synced(fn: Callable[..., Any], device: str) -> Callable[..., Any]:
    """On CUDA the timed call must include the work it queued, not just its launch. It passes arguments
    through: pedantic's setup hands the swap its adapter (a 0-argument wrapper failed every such benchmark on
    the H200 while CPU, where fn is returned as it is, never showed it)."""
    if not device.startswith("cuda"):
        return fn
    import torch

    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return out

    return call


@contextlib.contextmanager
def probed(benchmark, device: str, **extra: Any) -> Iterator[None]:
    """Counts dynamo's work and memory over all rounds and stores them in benchmark.extra_info, so that
    --benchmark-json files carry them beside the timings."""
    from bench.engine.probes.compile import count_compiles
    from bench.engine.probes.memory import measure_memory

    with measure_memory(device) as mem, count_compiles() as comp:
        yield
    c, m = comp.stats, mem.stats
    benchmark.extra_info.update(
        {
            "recompiles": c.recompiles,
            "frame_compiles": c.frame_compiles,
            "graph_breaks": c.graph_breaks,
            "recompile_reasons": list(c.recompile_reasons),
            "rss_peak_bytes": m.rss_peak_bytes,
            "rss_delta_bytes": m.rss_delta_bytes,
            "cuda_allocated_peak_bytes": m.cuda_allocated_peak_bytes,
            "memory_unavailable": dict(m.unavailable),
            "device": device,
            **extra,
        }
    )


def alternate(values: list[Any]) -> Callable[[], tuple[tuple, dict]]:
    """A pedantic setup that hands the target the next value in turn (untimed): A, B, A, B, ..."""
    state = {"i": 0}

    def setup():
        value = values[state["i"] % len(values)]
        state["i"] += 1
        return (value,), {}

    return setup


def adapter_path(sources: Sources, key: str) -> Path:
    return Path(sources.adapter_locations[key])
