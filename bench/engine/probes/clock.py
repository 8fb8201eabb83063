"""One clock for every timed call: perf_counter, with device synchronisation on CUDA.

Chosen once per case so that no measurement carries its own `if cuda:` branch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.results.measures import TimingStats


@dataclass(frozen=True)
class Clock:
    """Times a call in milliseconds. On CUDA it synchronises before starting and before stopping, so the
    figure is the work the call queued, not just its launch."""

    sync: Callable[[], None] | None = None

    @classmethod
    def for_device(cls, device: str) -> Clock:
        if device.startswith("cuda"):
            import torch

            return cls(sync=torch.cuda.synchronize)
        return cls()

    def time_ms(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if self.sync:
            self.sync()
        t0 = time.perf_counter()
        result = fn()
        if self.sync:
            self.sync()
        return (time.perf_counter() - t0) * 1000.0, result


def repeat(
    clock: Clock, fn: Callable[[], Any], *, warmup: int, min_rounds: int, min_time_s: float, max_rounds: int
) -> TimingStats:
    """Warm-up calls (not recorded), then timed rounds until both min_rounds and min_time_s are reached.

    Nothing else runs inside the loop: no probe sampling, no allocation of result lists beyond one float."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    spent_s = 0.0
    while len(samples) < max_rounds and (len(samples) < min_rounds or spent_s < min_time_s):
        ms, _ = clock.time_ms(fn)
        samples.append(ms)
        spent_s += ms / 1000.0
    return TimingStats.from_samples(samples)
