"""The memory probe against known allocations: a figure that cannot move with a real allocation is useless."""

from __future__ import annotations

import torch

from bench.engine.probes.memory import measure_memory

MiB = 2**20
SIZE = 96 * MiB


def test_rss_moves_by_a_known_allocation():
    with measure_memory("cpu") as window:
        block = torch.ones(SIZE, dtype=torch.uint8)  # touched: ones() writes every page
    m = window.stats
    assert abs(m.rss_delta_bytes - SIZE) < 0.1 * SIZE, m
    assert m.rss_peak_bytes - m.rss_before_bytes > 0.9 * SIZE
    del block


def test_peak_sees_a_freed_allocation_and_is_reset_per_step():
    with measure_memory("cpu") as first:
        block = torch.ones(SIZE, dtype=torch.uint8)
        del block
    f = first.stats
    assert f.rss_delta_bytes < 0.2 * SIZE  # freed again (large blocks are unmapped)
    assert f.rss_peak_bytes - f.rss_before_bytes > 0.9 * SIZE  # but the high-water mark saw it
    # Negative control: a step that allocates nothing must not inherit the previous step's peak.
    with measure_memory("cpu") as second:
        pass
    s = second.stats
    assert s.rss_peak_bytes - s.rss_before_bytes < 0.2 * SIZE, s


def test_gpu_figures_are_unavailable_with_a_reason_on_cpu():
    with measure_memory("cpu") as window:
        pass
    m = window.stats
    for name in ("cuda_allocated_peak_bytes", "cuda_reserved_peak_bytes", "nvml_process_used_bytes"):
        assert getattr(m, name) is None
        assert "no CUDA device" in m.unavailable[name]
    assert "rss_peak_bytes" not in m.unavailable


def test_probe_fills_its_record_when_the_step_raises():
    window = None
    try:
        with measure_memory("cpu") as window:
            raise RuntimeError("step failed")
    except RuntimeError:
        pass
    assert window.stats is not None and window.stats.rss_after_bytes > 0
