"""A serve step's figures and per-request records, from what was served and checked. Pure: no model, no clock."""

from __future__ import annotations

import statistics

from bench.results.serving_records import RequestRecord, ServingFigures


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def request_records(run, checks) -> tuple[RequestRecord, ...]:
    batches = {b.index: b for b in run.batches}
    out = []
    for s in run.served:
        b = batches[s.batch]
        c = checks.get(s.request.id)
        out.append(
            RequestRecord(
                id=s.request.id,
                adapter=s.request.adapter,
                prompt=s.request.prompt,
                batch=s.batch,
                arrival_ms=s.arrival_ms,
                start_ms=s.start_ms,
                finish_ms=s.finish_ms,
                latency_ms=s.finish_ms - s.arrival_ms,
                switch_ms=b.switch_ms,
                call_ms=b.call_ms,
                switched=b.switched,
                warmup=s.request.id in run.warmup,
                recompiles=b.recompiles,
                frame_compiles=b.frame_compiles,
                rss_after_bytes=b.rss_after_bytes,
                cuda_allocated_after_bytes=b.cuda_allocated_after_bytes,
                checked=c is not None,
                matches=None if c is None else c.matches,
                max_abs_diff=None if c is None else c.max_abs_diff,
                mismatched_tokens=None if c is None else c.mismatched_tokens,
            )
        )
    return tuple(out)


def figures(
    requests: tuple[RequestRecord, ...], batches, setup_ms: float, tokens_per_request: int
) -> ServingFigures:
    lat = sorted(r.latency_ms for r in requests)
    warm = sorted(r.latency_ms for r in requests if not r.warmup)
    makespan_s = (max(r.finish_ms for r in requests) - min(r.arrival_ms for r in requests)) / 1000.0
    by_request = {r.id: r for r in requests}
    # A batch's recompiles count once; a batch is warm-up when any of its requests is.
    warm_batch = {b.index: any(by_request[i].warmup for i in b.request_ids) for b in batches}
    rss = [b.rss_after_bytes for b in batches if b.rss_after_bytes is not None]
    cuda = [b.cuda_allocated_after_bytes for b in batches if b.cuda_allocated_after_bytes is not None]
    growth = None
    if len(rss) >= 2:
        growth = statistics.linear_regression(range(len(rss)), rss).slope
    return ServingFigures(
        requests=len(requests),
        latency_ms_p50=percentile(lat, 50),
        latency_ms_p90=percentile(lat, 90),
        latency_ms_p99=percentile(lat, 99),
        latency_ms_max=lat[-1],
        latency_ms_mean=statistics.fmean(lat),
        warm_latency_ms_p50=percentile(warm, 50) if warm else None,
        warm_latency_ms_p99=percentile(warm, 99) if warm else None,
        makespan_s=makespan_s,
        throughput_rps=len(requests) / makespan_s if makespan_s > 0 else None,
        tokens_per_s=len(requests) * tokens_per_request / makespan_s if makespan_s > 0 else None,
        switches=sum(1 for b in batches if b.switched),
        switch_ms_total=sum(b.switch_ms for b in batches),
        setup_ms=setup_ms,
        recompiles_total=sum(b.recompiles for b in batches),
        recompiles_after_warmup=sum(b.recompiles for b in batches if not warm_batch[b.index]),
        frame_compiles_total=sum(b.frame_compiles for b in batches),
        rss_peak_bytes=max(rss) if rss else None,
        rss_growth_bytes_per_request=growth,
        cuda_allocated_peak_bytes=max(cuda) if cuda else None,
        checked_responses=sum(1 for r in requests if r.checked),
        wrong_responses=sum(1 for r in requests if r.matches is False),
    )
