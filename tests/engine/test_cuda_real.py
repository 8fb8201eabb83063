"""The CUDA code paths on a real GPU: the memory probe, the clock, the generators and a forked case.

The same paths are tested everywhere with fakes of torch.cuda and pynvml (test_memory_probe, test_zygote,
test_rng and others). These tests need a CUDA device and are skipped without one, which is every CI machine:
they run for real through benchmarks/gpu_check.sh when a GPU is lent, and what they found is recorded in
reports/gpu/. Each figure is checked against a known amount of work, with a control that does less, so a
probe that returns a constant (or a clock that only times the launch) fails.
"""

from __future__ import annotations

from importlib.util import find_spec

import pytest
import torch

from bench.engine import rng
from bench.engine.probes.clock import Clock
from bench.engine.probes.memory import measure_memory, nvml_readings
from tests.conftest import LOAD_A, scenario_toml

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU by benchmarks/gpu_check.sh)"
)

MiB = 2**20
SIZE = 256 * MiB


def test_cuda_peak_sees_a_known_allocation_and_resets_per_step():
    with measure_memory("cuda") as first:
        block = torch.ones(SIZE, dtype=torch.uint8, device="cuda")
        del block
    f = first.stats
    assert not any(k.startswith("cuda_") for k in f.unavailable), f.unavailable
    assert f.cuda_allocated_peak_bytes - f.cuda_allocated_before_bytes >= SIZE
    assert f.cuda_allocated_after_bytes - f.cuda_allocated_before_bytes < SIZE // 8  # freed again
    assert f.cuda_reserved_peak_bytes >= f.cuda_allocated_peak_bytes
    # Control: a step that allocates nothing does not inherit the previous step's peak.
    with measure_memory("cuda") as second:
        pass
    s = second.stats
    assert s.cuda_allocated_peak_bytes - s.cuda_allocated_before_bytes < MiB, s


def test_nvml_sees_the_device_memory_move():
    torch.cuda.init()
    _, before, _ = nvml_readings(torch.cuda.current_device())
    torch.cuda.set_per_process_memory_fraction(1.0)
    block = torch.ones(4 * SIZE, dtype=torch.uint8, device="cuda")  # 1 GiB, far above the device's noise
    torch.cuda.synchronize()
    process, after, reason = nvml_readings(torch.cuda.current_device())
    del block
    torch.cuda.empty_cache()
    assert before is not None and after is not None, reason
    assert after - before >= 3 * SIZE, (before, after)
    # Inside a container NVML may hide the process (then the reason says so); where it shows it, it holds
    # at least the block.
    assert (process is None and reason) or process >= 4 * SIZE


def test_the_cuda_clock_times_the_queued_work_not_the_launch():
    torch.cuda.init()
    torch.cuda._sleep(1000)  # the first launch loads the kernel
    torch.cuda.synchronize()
    cycles = 40_000_000  # at most 2 GHz on these parts: at least 20 ms
    synced, _ = Clock.for_device("cuda").time_ms(lambda: torch.cuda._sleep(cycles))
    launch_only, _ = Clock.for_device("cpu").time_ms(lambda: torch.cuda._sleep(cycles))
    torch.cuda.synchronize()
    # The kernel spins for 40 M cycles (20 ms or more); the control, a clock without the device
    # synchronisation, sees only the launch.
    assert synced > 5.0, synced
    assert launch_only < synced / 5, (launch_only, synced)


def test_isolated_keeps_the_cuda_generator_and_seeded_repeats_it():
    torch.cuda.manual_seed(1234)
    state = torch.cuda.get_rng_state()
    with rng.isolated("cuda"):
        torch.randn(16, device="cuda")
    assert torch.equal(torch.cuda.get_rng_state(), state)
    with rng.seeded(7, "cuda"):
        a = torch.randn(16, device="cuda")
    with rng.seeded(7, "cuda"):
        b = torch.randn(16, device="cuda")
    assert torch.equal(a, b)
    # Control: a draw outside `isolated` moves the generator, so the equality above is not vacuous.
    torch.randn(16, device="cuda")
    assert not torch.equal(torch.cuda.get_rng_state(), state)


# nf4 through bitsandbytes' CUDA kernels where it is installed (the zygote imports it with NVML's answers).
PRECISIONS = ["fp32", "bf16", "nf4"] if find_spec("bitsandbytes") else ["fp32", "bf16"]


def test_nvml_gives_the_compute_capability_torch_gives():
    from bench.runner.zygote import _nvml_capability

    for index in range(torch.cuda.device_count()):
        assert _nvml_capability(torch.cuda.device(index)) == torch.cuda.get_device_capability(index)


def test_the_zygote_preloads_everything_and_holds_no_cuda_context():
    from bench.runner.launch import shared_zygote

    zygote = shared_zygote(None)  # WorkerGone here carries the stack that initialised CUDA
    assert zygote.cuda_initialized is False
    assert ("bitsandbytes" in zygote.preloaded) == bool(find_spec("bitsandbytes")), zygote.preloaded


def test_a_forked_case_runs_on_the_gpu_with_every_cuda_figure(tmp_path, cache_root, write_scenario):
    """The preloaded worker never touches CUDA, so a case forked from it can: it runs on the GPU, passes,
    and each measured step has the allocator's figures (none marked unavailable)."""
    from bench.runner.launch import RunOptions, run_one
    from bench.scenario import load_scenario
    from bench.spec.cases import expand

    path = write_scenario(
        scenario_toml(
            "cuda-forward",
            [LOAD_A, "forward"],
            matrix={"precision": PRECISIONS, "compile": ["none"]},
            timing={"warmup": 1, "min_rounds": 3, "min_time_s": 0.0},
            adapters={"a": {"rank": 8, "alpha": 16, "seed": 3, "init_std": 0.2}},
        )
    )
    cases = expand(load_scenario(path))
    assert len(cases) == len(PRECISIONS)
    for case in cases:
        result = run_one(
            case, RunOptions(out_dir=tmp_path / case.precision, cache_root=cache_root, device="cuda")
        )
        assert result.verdict == "pass", (case.case_id, result.reason)
        assert result.worker.start_method == "fork", result.worker
        forward = [s for s in result.steps if s.op == "forward"][-1]
        assert forward.output is not None and forward.output.matches
        m = forward.memory
        assert m.cuda_allocated_peak_bytes and m.cuda_allocated_peak_bytes > 0, m
        assert not any(k.startswith("cuda_") for k in m.unavailable), m.unavailable


def test_cuda_graph_recordings_count_a_rebound_parameter_and_not_an_in_place_copy():
    """The re-record a swap that rebinds a Parameter costs under mode="reduce-overhead" (peft#2611), counted
    by bench.engine.probes.cudagraphs; the control copies into the captured tensor and records nothing."""
    from bench.engine.probes.cudagraphs import count_cuda_graphs

    torch._dynamo.reset()
    layer = torch.nn.Linear(64, 64, device="cuda")
    fn = torch.compile(layer, backend="inductor", mode="reduce-overhead")
    x = torch.randn(8, 64, device="cuda")
    with count_cuda_graphs("cuda", "reduce-overhead") as first:
        for _ in range(4):  # warm-up runs, then the recording
            fn(x)
    assert first.counts.unavailable is None and first.counts.recordings >= 1
    with count_cuda_graphs("cuda", "reduce-overhead") as in_place:
        with torch.no_grad():
            layer.weight.copy_(torch.randn_like(layer.weight))
        for _ in range(3):
            out = fn(x)
    assert in_place.counts.recordings == 0
    torch.testing.assert_close(out, layer(x))
    with count_cuda_graphs("cuda", "reduce-overhead") as rebound:
        layer.weight = torch.nn.Parameter(torch.randn_like(layer.weight))
        for _ in range(3):
            out = fn(x)
    assert rebound.counts.recordings + rebound.counts.skips >= 1
    torch.testing.assert_close(out, layer(x))
