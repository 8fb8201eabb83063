"""`serve`: replay a seeded request stream over several adapters with the case's strategy (bench/engine/serving).

The step sets the model up itself (each strategy loads, prepares and compiles in its own way), so it is the
scenario's only step; the matrix's `strategy` axis says how it switches. Every response, or a recorded seeded
sample, is checked against a fresh eager reference of its adapter (bench.engine.serving.check).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.engine.model import vocab_size_of
from bench.engine.serving.serve import run_stream
from bench.ops.base import Op, Walk
from bench.ops.script_text import ReproUnsupported
from bench.spec.schema import ARRIVALS, POPULARITIES, ServeSpec

MAX_REQUESTS = 100_000
# The open loop's arrival rate. The replay's clock is virtual (nothing sleeps), so a low rate costs nothing,
# but its arrival times grow as requests / rate: at 1e-3 requests per second, MAX_REQUESTS of them arrive
# within about 1e11 ms, where a float64 still resolves 1e-5 ms. At 1e-306 the second arrival overflowed to
# inf and its latency was NaN.
MIN_RATE_RPS = 1e-3
MAX_RATE_RPS = 1e6
SERVE_FIELDS = frozenset(
    {
        "adapters",
        "requests",
        "popularity",
        "zipf_s",
        "arrival",
        "rate_rps",
        "concurrency",
        "prompts",
        "batch_size",
        "max_wait_ms",
        "warmup_requests",
        "check_per_adapter",
        "seed",
    }
)


class Serve(Op):
    name = "serve"
    fields = SERVE_FIELDS
    checks_responses = True
    own_expectations = frozenset(
        {
            "wrong_responses",
            "recompiles_after_warmup",
            "oracles_agree",
            "compile_effective",
            "distinguishable",
        }
    )

    def parse(self, t, ctx):
        listed = t.str_list("adapters")
        if not listed:
            raise t.error("adapters", "needs at least one adapter key or family name")
        keys: list[str] = []
        for i, key in enumerate(listed):
            if key in ctx.families:
                keys.extend(ctx.families[key])
            elif key in ctx.adapters:
                keys.append(key)
            else:
                raise t.error(f"adapters[{i}]", f"adapter {key!r} is not defined in [adapters]")
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise t.error("adapters", f"adapter(s) listed twice: {', '.join(dupes)}")
        arrival = t.choice("arrival", ARRIVALS, "closed")
        rate = t.get("rate_rps", float, None)
        if arrival == "poisson" and (rate is None or not MIN_RATE_RPS <= rate <= MAX_RATE_RPS):
            raise t.error(
                "rate_rps",
                f"arrival 'poisson' needs rate_rps, requests per second in [{MIN_RATE_RPS:g}, {MAX_RATE_RPS:g}]"
                + ("" if rate is None else f", got {rate:g}"),
            )
        if arrival == "closed" and rate is not None:
            raise t.error("rate_rps", "only an open loop (arrival = 'poisson') has an arrival rate")
        zipf_s = t.get("zipf_s", float, 1.1)
        if not 0 < zipf_s <= 10:
            raise t.error("zipf_s", f"must be in (0, 10], got {zipf_s}")
        max_wait_ms = t.get("max_wait_ms", float, 10.0)
        if not 0 <= max_wait_ms <= 60_000:
            raise t.error("max_wait_ms", f"must be between 0 and 60000, got {max_wait_ms}")
        requests = t.int_in("requests", 64, 1, MAX_REQUESTS)
        check = t.get("check_per_adapter", int, None)
        if check is not None and not 1 <= check <= MAX_REQUESTS:
            raise t.error("check_per_adapter", f"must be between 1 and {MAX_REQUESTS}, got {check}")
        spec = ServeSpec(
            adapters=tuple(keys),
            requests=requests,
            popularity=t.choice("popularity", POPULARITIES, "uniform"),
            zipf_s=zipf_s,
            arrival=arrival,
            rate_rps=rate,
            concurrency=t.int_in("concurrency", 1, 1, 1024),
            prompts=t.int_in("prompts", 8, 1, 4096),
            batch_size=t.int_in("batch_size", 4, 1, 1024),
            max_wait_ms=max_wait_ms,
            warmup_requests=t.int_in("warmup_requests", 1, 0, requests),
            check_per_adapter=check,
            seed=t.int_in("seed", 0, 0, 2**31 - 2),
        )
        return {"serve": spec}

    def check(self, walk: Walk, step):
        if walk.any_loaded or walk.compiled:
            raise walk.fail(step, "serve sets the model up itself: it must be the scenario's only step")

    def args(self, step):
        s = step.serve
        args = {
            "adapters": list(s.adapters),
            "requests": s.requests,
            "popularity": s.popularity,
            "arrival": s.arrival,
            "concurrency": s.concurrency,
            "prompts": s.prompts,
            "batch_size": s.batch_size,
            "max_wait_ms": s.max_wait_ms,
            "warmup_requests": s.warmup_requests,
            "seed": s.seed,
        }
        if s.popularity == "zipf":
            args["zipf_s"] = s.zipf_s
        if s.rate_rps is not None:
            args["rate_rps"] = s.rate_rps
        if s.check_per_adapter is not None:
            args["check_per_adapter"] = s.check_per_adapter
        return args

    def apply(self, subject, step, adapters, locations):
        spec = step.serve
        max_rank = max(_max_rank(adapters[k], locations[k]) for k in spec.adapters)
        return run_stream(subject, spec, locations, max_rank, vocab_size_of(subject.model), step.label)

    def script(self, w, step):
        # A serve failure names its requests and adapters in the results; replaying the stream needs the
        # strategy's own loop, which a standalone script does not have yet.
        raise ReproUnsupported(
            "serve steps have no reproduction script yet: the results list each wrong request with its "
            "adapter and prompt; rerun the case with `peft-bench run FILE -k CASE_ID`"
        )


def _max_rank(spec, location: str) -> int:
    if spec.generated:
        return spec.max_rank
    config = json.loads((Path(location) / "adapter_config.json").read_text())
    return max([int(config.get("r", 8)), *(int(v) for v in (config.get("rank_pattern") or {}).values())])
