"""A case as the numbers its cost depends on: steps, checked outputs, forward passes, compute, weights loaded,
the timing policy's floor and the compiles its backend runs. Pure: the caller passes the parameter count."""

from __future__ import annotations

from dataclasses import dataclass

from bench.engine.serving.stream import make_stream
from bench.estimate.policy import (
    BYTES_PER_PARAM,
    COMPILE_BACKENDS,
    COMPUTE_FACTOR,
    SWAP_LOADS,
    TRAIN_PASSES_PER_STEP,
)
from bench.ops import op_named
from bench.spec.cases import Case
from bench.spec.schema import Step, Workload
from bench.spec.shapes import step_workload


@dataclass(frozen=True)
class CaseFeatures:
    """What the estimate knows of one case. `params` None: the model's size is unknown, so is its cost."""

    case_id: str
    params: int | None
    precision: str
    backend: str  # the compile backend, "none" for eager
    skipped: bool = False  # the precision cannot run here: the worker starts and skips
    steps: int = 0
    checks: int = 0  # model calls compared with a fresh reference (and the math oracle)
    passes: int = 0  # forward passes of the model, all calls together
    tokens: int = 0  # tokens through the model, all passes together
    timed_floor_s: float = 0.0  # the timing policy's min_time_s, once per measured step
    compiles: int = 0  # checked model calls on the compiled model: each may trace a frame
    traces: int = 0  # first traces: each compile's first checked call, a compiled serve step's setup
    layers: int | None = None  # the model's decoder layers (a trace grows with them); None: unknown
    # Whole models loaded: the subject, then a reference and a math-oracle model per checked step and per
    # serve step (a serve step's check loads one of each and its adapters into them in turn).
    model_loads: int = 1
    # `load_adapter` calls, a hotswap counted as SWAP_LOADS of one: the load ops' and the serve steps' (each
    # strategy's setup and switches, and its check's one per adapter). A checked step's reference loads are
    # part of `checks`.
    adapter_loads: float = 0.0

    @property
    def weight_bytes(self) -> float | None:
        return None if self.params is None else self.params * BYTES_PER_PARAM.get(self.precision, 4.0)

    def vector(self) -> dict[str, float] | None:
        """The wall-time features, named as policy.DEFAULT_WALL_COEFFICIENTS; None where params is unknown."""
        if self.params is None:
            return None
        if self.skipped:
            return {"case": 1.0}
        group = self.backend if self.backend in COMPILE_BACKENDS else "other"
        return {
            "case": 1.0,
            "steps": float(self.steps),
            "checks": float(self.checks),
            "passes": float(self.passes),
            "gparam_tokens": self.params * self.tokens * COMPUTE_FACTOR.get(self.precision, 1.0) / 1e9,
            "load_gb": self.model_loads * self.weight_bytes / 1e9,
            # An adapter load injects a LoRA layer into every target module of every decoder layer.
            **({"adapter_load_layers": self.adapter_loads * self.layers} if self.layers else {}),
            "timed_floor_s": self.timed_floor_s,
            **({f"compiles:{group}": float(self.compiles)} if self.backend != "none" else {}),
            # A first trace walks every layer: about 0.5 s per layer with aot_eager on the 135M and 0.5B
            # shapes (30 and 24 layers), where the count of calls above cannot tell them apart.
            **(
                {f"compile_layers:{group}": float(self.traces * self.layers)}
                if self.backend != "none" and self.layers
                else {}
            ),
        }


def passes_per_call(w: Workload) -> tuple[int, int]:
    """(forward passes, tokens) of one workload call: a generate call is one pass per new token."""
    if w.kind == "generate":
        return w.new_tokens, w.batch_size * (w.seq_len + w.new_tokens - 1)
    return 1, w.batch_size * w.seq_len


def case_features(
    case: Case, params: int | None, *, skipped: bool = False, layers: int | None = None
) -> CaseFeatures:
    """Long because: one pass over the steps adds up each kind of work an op brings, as the executor runs it."""
    s = case.scenario
    per_call_passes, per_call_tokens = passes_per_call(s.workload)
    timing = s.timing
    backend = case.compile.backend if case.compile.enabled else "none"
    steps = checks = calls = compiles = traces = extra_passes = extra_tokens = measured = 0
    model_loads, adapter_loads = 1, 0.0
    compiled = untraced = False
    for step in s.steps:
        op = op_named(step.op)
        if op.compiles:
            compiled = untraced = backend != "none"
        steps += 1 + _repeats(step)
        adapter_loads += _op_loads(step, op.moves_adapter, case.hotswap_path)
        checked = op.checks_output or step.expect.raises is not None
        if checked:
            checks += 1
            calls += 3  # the subject's call, the reference's and the oracle's
            model_loads += 2
            compiles += compiled
            traces += untraced
            untraced = False
        if op.measures:
            measured += 1
            calls += 1 + timing.warmup + timing.min_rounds
        if (shaped := step_workload(step, s.workload)) is not None:
            # A step on its own shape: its calls (the subject's and the oracles') carry that shape's tokens.
            own = 3 * checked + (1 + timing.warmup + timing.min_rounds) * op.measures
            extra_tokens += own * (passes_per_call(shaped)[1] - per_call_tokens)
        if step.train_steps:
            extra_passes += TRAIN_PASSES_PER_STEP * step.train_steps
            extra_tokens += (
                TRAIN_PASSES_PER_STEP * step.train_steps * s.workload.batch_size * s.workload.seq_len
            )
        if step.serve is not None:
            served, checked_adapters = _serve_work(step, s.workload)
            calls += served
            checks += checked_adapters
            model_loads += 2  # the check's reference and math-oracle models, each loaded once
            adapter_loads += _serve_loads(step, case.strategy, case.hotswap_path)
            compiles += compiled * len(step.serve.adapters)
            traces += backend != "none"  # every strategy compiles in its setup on a compiled case
    return CaseFeatures(
        case_id=case.id,
        params=params,
        precision=case.precision,
        backend=backend,
        skipped=skipped,
        steps=steps,
        checks=checks,
        passes=calls * per_call_passes + extra_passes,
        tokens=calls * per_call_tokens + extra_tokens,
        timed_floor_s=measured * timing.min_time_s,
        compiles=compiles,
        traces=traces,
        layers=layers,
        model_loads=model_loads,
        adapter_loads=adapter_loads,
    )


def _repeats(step: Step) -> int:
    """repeat_load's loads beyond the step itself: each is an op of its own."""
    return max((step.count or 0) - 1, 0)


def _serve_work(step: Step, w: Workload) -> tuple[int, int]:
    """(model calls, adapters checked against a reference) of a serve step: each request is a call of one
    prompt, batched requests still one call each here (an over-estimate for mixed_batch)."""
    serve = step.serve
    checked = len(serve.adapters) * (serve.check_per_adapter or 1)
    return serve.requests + checked, checked


def _op_loads(step: Step, moves_adapter: bool, path: str) -> float:
    """`load_adapter` calls of a step that is not a serve step: a load op's one (a hotswap's SWAP_LOADS of
    one), repeat_load's `count`."""
    swap = SWAP_LOADS.get(path, 1.0)
    if step.op == "repeat_load":
        return (step.count or 0) * (swap if step.mode == "hotswap" else 1.0)
    if moves_adapter:
        return swap if step.hotswap else 1.0
    return 0.0


def _serve_loads(step: Step, strategy: str, path: str) -> float:
    """`load_adapter` calls of a serve step, as bench.engine.serving.strategies makes them: side_by_side and
    mixed_batch load every adapter in their setup; reload and hotswap load the first, then one per switch of
    the stream (served one request at a time, in the stream's order), a hotswap counted as SWAP_LOADS of one;
    and the check loads each adapter the stream asks for once into its reference."""
    serve = step.serve
    stream = make_stream(serve)
    switches = sum(a.adapter != b.adapter for a, b in zip(stream, stream[1:], strict=False))
    own = {"reload": 1 + switches, "hotswap": 1 + switches * SWAP_LOADS.get(path, 1.0)}
    return own.get(strategy, len(serve.adapters)) + len({r.adapter for r in stream})
