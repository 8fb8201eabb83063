"""Replaying one stream with one strategy on the subject: the measured part of a serve step.

Setup (loading, compiling) is timed apart from the stream. Each batch is timed as its switch and its model
call; between batches, outside the timed calls, the probes read RSS (and CUDA memory on a GPU) and dynamo's
compile records, and the checked responses are written to the case's work folder for bench.engine.serving.check
(kept in memory they would show as RSS growing over the stream: 3 MB per response at a 49k vocabulary).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.engine.model import generate_kwargs
from bench.engine.oom import is_out_of_memory
from bench.engine.probes.compile import compile_mark, compiled_since
from bench.engine.probes.memory import rss_bytes
from bench.engine.serving.replay import Served, replay
from bench.engine.serving.strategies import STRATEGIES, ServeContext
from bench.engine.serving.stream import Request, checked_ids, make_stream, prompt_pool, warmup_ids
from bench.errors import error_text
from bench.results.exits import PHASE_MARKER
from bench.spec.schema import ServeSpec


@dataclass(frozen=True)
class Response:
    logits: Any  # forward: [seq_len, vocab] of the prompt; generate: [new_tokens, vocab], one per new token
    tokens: Any = None  # generate: the greedy new tokens


@dataclass(frozen=True)
class Batch:
    """One model call of the stream."""

    index: int
    request_ids: tuple[int, ...]
    switched: bool
    switch_ms: float
    call_ms: float
    recompiles: int
    frame_compiles: int
    recompile_reasons: tuple[str, ...]
    rss_after_bytes: int | None
    cuda_allocated_after_bytes: int | None


@dataclass
class ServingRun:
    strategy: str
    spec: ServeSpec
    stream: tuple[Request, ...]
    checked: frozenset[int]
    warmup: frozenset[int]
    prompts: Any  # [prompts, seq_len] token ids on the device
    setup_ms: float | None = None
    # Wall-clock seconds from the first request to the last: the model calls, the probes between them and
    # saving the checked responses (setup excluded); what checking the responses is compared with.
    serve_s: float | None = None
    served: list[Served] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    responses: dict[int, Path] = field(default_factory=dict)  # request id -> its saved Response
    response_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


class ServingError(Exception):
    """The strategy raised during setup or at one request; `partial` keeps what was served until then."""

    def __init__(self, message: str, partial: ServingRun):
        super().__init__(message)
        self.partial = partial


def phase(label: str) -> None:
    """A progress line for the parent (bench.runner.progress tails the case log): a serve step runs for minutes."""

    print(f"{PHASE_MARKER} {label}", flush=True)


def run_stream(
    subject, spec: ServeSpec, locations: dict[str, str], max_rank: int, vocab_size: int, label: str = "serve"
) -> ServingRun:
    strategy = STRATEGIES[subject.strategy]
    stream = make_stream(spec)
    prompts = prompt_pool(spec, subject.workload.seq_len, vocab_size, subject.workload.seed).to(
        subject.device
    )
    run = ServingRun(
        strategy=strategy.name,
        spec=spec,
        stream=stream,
        checked=checked_ids(stream, spec),
        warmup=warmup_ids(stream, spec),
        prompts=prompts,
    )
    run.response_dir = Path(subject.work_dir) / "responses"
    run.response_dir.mkdir(parents=True, exist_ok=True)
    ctx = ServeContext(
        subject=subject,
        locations={k: locations[k] for k in spec.adapters},
        keys=spec.adapters,
        first=stream[0].adapter,
        max_rank=max_rank,
    )
    clock = subject.clock
    where = "setup"
    every = max(1, spec.requests // 10)
    try:
        phase(f"{label}: {strategy.name} setup")
        run.setup_ms, _ = clock.time_ms(lambda: strategy.setup(ctx))
        run.notes.extend(ctx.notes)

        done = 0  # requests served so far (a running count: the stream may hold 100,000)

        def serve(batch: list[Request]) -> float:
            nonlocal where, done
            where = f"request {batch[0].id} (adapter {batch[0].adapter})"
            if done == 0 or done // every != (done + len(batch)) // every:
                phase(f"{label}: request {done + 1}/{spec.requests}")
            done += len(batch)
            return _serve_batch(run, ctx, strategy, batch)

        started = time.perf_counter()
        try:
            run.served = replay(
                stream,
                serve,
                concurrency=spec.concurrency,
                batch_size=spec.batch_size if strategy.batches else 1,
                max_wait_ms=spec.max_wait_ms,
            )
        finally:
            run.serve_s = time.perf_counter() - started
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise ServingError(f"{strategy.name} failed at {where}: {error_text(exc)}", run) from exc
    return run


def _serve_batch(run: ServingRun, ctx: ServeContext, strategy, batch: list[Request]) -> float:
    import torch
    from safetensors.torch import save_file

    subject = ctx.subject
    clock = subject.clock
    keys = [r.adapter for r in batch]
    mark = compile_mark()
    switch_ms, switched = clock.time_ms(lambda: strategy.activate(ctx, keys))
    ids = run.prompts[[r.prompt for r in batch]]
    kwargs = strategy.call_kwargs(ctx, keys)
    forward = subject.compiled if subject.compiled is not None else ctx.model
    call_ms, out = clock.time_ms(lambda: model_call(forward, ctx.model, subject.workload, ids, **kwargs))
    recompiles, frames, reasons = compiled_since(mark)
    cuda = torch.cuda.memory_allocated() if subject.device.startswith("cuda") else None
    run.batches.append(
        Batch(
            index=len(run.batches),
            request_ids=tuple(r.id for r in batch),
            switched=bool(switched),
            switch_ms=switch_ms,
            call_ms=call_ms,
            recompiles=recompiles,
            frame_compiles=frames,
            recompile_reasons=reasons,
            rss_after_bytes=rss_bytes(),
            cuda_allocated_after_bytes=cuda,
        )
    )
    logits, tokens = out
    for row, r in enumerate(batch):
        if r.id in run.checked:
            path = run.response_dir / f"{r.id}.safetensors"
            tensors = {"logits": logits[row].float().cpu().contiguous()}
            if tokens is not None:
                tensors["tokens"] = tokens[row].cpu().contiguous()
            save_file(
                tensors, path
            )  # safetensors: nothing in the suite unpickles (tests/runner/test_safety.py)
            run.responses[r.id] = path
    return switch_ms + call_ms


def load_response(path: Path) -> Response:
    from safetensors.torch import load_file

    data = load_file(path)
    return Response(logits=data["logits"], tokens=data.get("tokens"))


def model_call(forward, model, workload, input_ids, **kwargs):
    """One batch through the model: (logits [B, ...], greedy tokens or None), left on the device.

    forward: what a forward workload calls (the compiled model, or `model`); generate always goes through
    `model.generate`, with each step's logits (output_logits). Shared by the stream and its reference."""
    import torch

    mask = torch.ones_like(input_ids)
    if workload.kind == "generate":
        kw = generate_kwargs(workload, model.config.pad_token_id, logits=True)
        out = model.generate(input_ids=input_ids, attention_mask=mask, **kw, **kwargs)
        return torch.stack(out.logits, dim=1), out.sequences[:, input_ids.shape[1] :]
    return forward(input_ids=input_ids, attention_mask=mask, **kwargs).logits, None
