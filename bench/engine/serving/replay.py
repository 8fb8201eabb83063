"""The queue of a serve step, in virtual time: requests arrive (open loop: at their arrival times; closed loop:
each of `concurrency` clients sends its next request when its previous one finished), one server takes them
in arrival order, and each model call advances the clock by the service time that was really measured.

Nothing sleeps: for one FIFO server with measured service times, the virtual clock gives exactly the latency
(queueing + switch + call) a real clock would, without idling the machine between arrivals.
A pure function of the stream and the service times `serve` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.engine.serving.stream import Request


@dataclass(frozen=True)
class Served:
    request: Request
    batch: int
    arrival_ms: float
    start_ms: float
    finish_ms: float


def replay(
    stream: Sequence[Request],
    serve: Callable[[list[Request]], float],
    *,
    concurrency: int = 1,
    batch_size: int = 1,
    max_wait_ms: float = 0.0,
) -> list[Served]:
    """Serve the stream through `serve(batch) -> service_ms`. Closed loop when arrivals are None."""
    closed = any(r.arrival_ms is None for r in stream)
    arrival: dict[int, float] = {}
    if closed:
        for r in stream[:concurrency]:
            arrival[r.id] = 0.0
    else:
        arrival = {r.id: float(r.arrival_ms) for r in stream}
    order = {r.id: i for i, r in enumerate(stream)}
    waiting = list(stream)  # not yet served, in arrival order (open) / release order (closed)
    out: list[Served] = []
    now = 0.0
    batch_index = 0
    released = min(concurrency, len(stream)) if closed else len(stream)
    while waiting:
        known = [r for r in waiting if r.id in arrival]
        ready = [r for r in known if arrival[r.id] <= now]
        if not ready:
            now = min(arrival[r.id] for r in known)
            continue
        if batch_size > 1 and len(ready) < batch_size:
            # Wait for the batch to fill, up to max_wait after its first request, if known arrivals come
            # by then (in a closed loop no request arrives while the server waits, so it never waits).
            deadline = arrival[ready[0].id] + max_wait_ms
            later = sorted(arrival[r.id] for r in known if now < arrival[r.id] <= deadline)
            missing = batch_size - len(ready)
            if later:
                now = later[missing - 1] if len(later) >= missing else deadline
                ready = [r for r in known if arrival[r.id] <= now]
        batch = ready[:batch_size]
        start = now
        now += serve(batch)
        for r in batch:
            out.append(Served(r, batch_index, arrival[r.id], start, now))
            waiting.remove(r)
            if closed and released < len(stream):
                arrival[stream[released].id] = now
                released += 1
        batch_index += 1
    out.sort(key=lambda s: order[s.request.id])
    return out
