"""The `repeat_load` op: N loads side by side, N hotswaps into one slot, or N load/delete cycles, with the
memory after each repetition, so a leak shows as a slope and hotswap's flat line stands beside it."""

from __future__ import annotations

import gc
from collections.abc import Callable

from bench.engine.probes.clock import Clock
from bench.engine.probes.memory import rss_bytes
from bench.results.measures import RepeatStats
from bench.results.stats import slope


def repeat_load(
    mode: str,
    count: int,
    one: Callable[[int], None],
    clock: Clock,
    device: str,
    adapter_bytes: int | None,
) -> RepeatStats:
    """`one(i)` performs repetition i (a load, a swap, or a load then a delete)."""
    cuda = device.startswith("cuda")
    if cuda:
        import torch
    times: list[float] = []
    rss: list[int] = []
    cuda_alloc: list[int] = []
    for i in range(count):
        ms, _ = clock.time_ms(lambda i=i: one(i))
        times.append(ms)
        gc.collect()  # cyclic garbage would otherwise look like growth until the collector runs
        rss.append(rss_bytes())
        if cuda:
            cuda_alloc.append(torch.cuda.memory_allocated())
    return RepeatStats(
        mode=mode,
        count=count,
        op_time_ms=tuple(times),
        rss_after_bytes=tuple(rss),
        rss_growth_bytes_per_rep=slope([float(x) for x in rss]),
        cuda_allocated_after_bytes=tuple(cuda_alloc) if cuda else None,
        cuda_growth_bytes_per_rep=slope([float(x) for x in cuda_alloc]) if cuda else None,
        adapter_bytes_per_rep=adapter_bytes,
    )
