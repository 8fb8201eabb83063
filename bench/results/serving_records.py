"""A serve step's records: each request as it was served and checked, and one strategy's figures over the
stream (bench/engine/serving). Frozen dataclasses, units in the field names; re-exported by bench.results.records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.results.measures import OracleAgreement


@dataclass(frozen=True)
class RequestRecord:
    """One request of the stream, as it was served and checked."""

    id: int
    adapter: str
    prompt: int  # index into the stream's prompt pool
    batch: int  # index of the batch (model call) that served it
    arrival_ms: float
    start_ms: float  # when its batch began (switch included)
    finish_ms: float
    latency_ms: float  # finish - arrival: queueing + switch + model call
    switch_ms: float  # the batch's adapter switch (0 when the slot already held it)
    call_ms: float  # the batch's model call
    switched: bool
    warmup: bool  # the first requests, and each adapter's first: recompiles there are expected
    recompiles: int  # recompiles during its batch (a batch's count is on each of its requests)
    frame_compiles: int
    rss_after_bytes: int | None
    cuda_allocated_after_bytes: int | None = None
    checked: bool = False
    matches: bool | None = None  # None: not checked
    max_abs_diff: float | None = None
    mismatched_tokens: int | None = None


@dataclass(frozen=True)
class ServingFigures:
    """One strategy over one stream: what a serving engineer compares."""

    requests: int
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_max: float
    latency_ms_mean: float
    # The same without warm-up requests (the first ones and each adapter's first): steady-state serving.
    warm_latency_ms_p50: float | None
    warm_latency_ms_p99: float | None
    makespan_s: float  # virtual time from the first arrival to the last finish
    throughput_rps: float | None  # None when the makespan is 0 (one instant request)
    tokens_per_s: float | None  # prompt tokens (forward) or new tokens (generate) per second of makespan
    switches: int
    switch_ms_total: float
    setup_ms: float  # loading the adapters and compiling, before the first request
    recompiles_total: int
    recompiles_after_warmup: int
    frame_compiles_total: int
    rss_peak_bytes: int | None
    rss_growth_bytes_per_request: float | None  # least-squares slope of rss_after over the request index
    cuda_allocated_peak_bytes: int | None
    checked_responses: int
    wrong_responses: int


@dataclass(frozen=True)
class ServingRecord:
    strategy: str
    hotswap_path: str | None  # the hotswap strategy's path; None for the others
    adapters: tuple[str, ...]
    arrival: str
    figures: ServingFigures | None  # None when no request was served (the strategy failed in setup)
    requests: tuple[RequestRecord, ...]
    check_rule: str  # how responses were compared (tolerance, tokens)
    # The library reference against the math oracle, per served adapter, on the prompts `oracle_prompts`.
    oracle_agreement: dict[str, OracleAgreement] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # figures not measurable here, with the reason
    notes: tuple[str, ...] = ()
    # Indices into the prompt pool the math oracle (and the contrast) checked every adapter on; () in older
    # files, whose oracle checked prompt 0 only.
    oracle_prompts: tuple[int, ...] = ()
    # "a / b" -> how far apart the fresh references of two served adapters are, in units of the response
    # check's bound, the smallest over `oracle_prompts` (bench.engine.serving.check.adapter_margins); {} in
    # older files and with one adapter served.
    adapter_margins: dict[str, float] = field(default_factory=dict)
    # Wall-clock seconds: serving the stream (first request to last, setup excluded) and checking it
    # (bench.engine.serving.evidence), the check split into loading the fresh reference model with its
    # adapters, computing the references and comparing every kept response, and the math oracle with the
    # distinguishability margins. None in older files.
    serve_s: float | None = None
    check_s: float | None = None
    check_load_s: float | None = None
    check_responses_s: float | None = None
    check_oracle_s: float | None = None
    reference_calls: int | None = None  # model calls the fresh reference made (forward: one per adapter)
