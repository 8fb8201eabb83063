"""The request stream of a serve step: which adapter each request asks for, on which prompt, and when it
arrives. A pure function of the ServeSpec (its seed): every strategy of a scenario replays the same stream."""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.spec.schema import ServeSpec


@dataclass(frozen=True)
class Request:
    id: int
    adapter: str
    prompt: int
    # Open loop: the arrival time. Closed loop: None; a request arrives when one of the clients is free.
    arrival_ms: float | None


def popularity(spec: ServeSpec) -> list[float]:
    """Each adapter's probability, in the order the step lists them (Zipf: the first is the most popular)."""
    n = len(spec.adapters)
    if spec.popularity == "zipf":
        weights = [1.0 / (i + 1) ** spec.zipf_s for i in range(n)]
    else:
        weights = [1.0] * n
    total = sum(weights)
    return [w / total for w in weights]


def make_stream(spec: ServeSpec) -> tuple[Request, ...]:
    rng = random.Random(spec.seed)
    adapters = rng.choices(spec.adapters, weights=popularity(spec), k=spec.requests)
    prompts = [rng.randrange(spec.prompts) for _ in range(spec.requests)]
    arrivals: list[float | None] = [None] * spec.requests
    if spec.arrival == "poisson":
        t = 0.0
        for i in range(spec.requests):
            arrivals[i] = t
            t += rng.expovariate(spec.rate_rps) * 1000.0
    return tuple(
        Request(id=i, adapter=a, prompt=p, arrival_ms=arr)
        for i, (a, p, arr) in enumerate(zip(adapters, prompts, arrivals, strict=True))
    )


def checked_ids(stream: tuple[Request, ...], spec: ServeSpec) -> frozenset[int]:
    """Which responses are checked: all of them, or a seeded sample of `check_per_adapter` per adapter
    (every request of an adapter that has fewer)."""
    if spec.check_per_adapter is None:
        return frozenset(r.id for r in stream)
    rng = random.Random(spec.seed + 1)
    chosen: set[int] = set()
    for adapter in spec.adapters:
        ids = [r.id for r in stream if r.adapter == adapter]
        chosen.update(ids if len(ids) <= spec.check_per_adapter else rng.sample(ids, spec.check_per_adapter))
    return frozenset(chosen)


def warmup_ids(stream: tuple[Request, ...], spec: ServeSpec) -> frozenset[int]:
    """Requests where a recompile is expected: the first `warmup_requests`, and each adapter's first."""
    seen: set[str] = set()
    out = set(range(min(spec.warmup_requests, len(stream))))
    for r in stream:
        if r.adapter not in seen:
            seen.add(r.adapter)
            out.add(r.id)
    return frozenset(out)


def prompt_pool(spec: ServeSpec, seq_len: int, vocab_size: int, seed: int):
    """`spec.prompts` token sequences of `seq_len`, seeded (ids 3.. so no pad/bos/eos token is drawn)."""
    import torch

    g = torch.Generator().manual_seed(seed * 7919 + spec.seed)
    return torch.randint(3, vocab_size, (spec.prompts, seq_len), generator=g)
