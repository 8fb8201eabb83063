"""Rules over a whole parsed scenario: the order of its steps, serving, counts that need a compiled model,
and known-failure markers that can apply."""

from __future__ import annotations

import dataclasses

from bench.errors import ScenarioError
from bench.ops import OPS
from bench.ops.base import Walk
from bench.results.stats import MIN_SAMPLES
from bench.spec.schema import (
    CUDA_GRAPH_MODES,
    SERVING_STRATEGIES,
    KnownFailure,
    Scenario,
    Step,
)

# ---------------------------------------------------------------------------------------------------------
# Reading


def check_order(s: Scenario) -> None:
    walk = Walk(scenario=s)
    compiled_somewhere = any(c.enabled for c in s.matrix.compile)
    graphs_somewhere = any(c.backend == "inductor" and c.mode in CUDA_GRAPH_MODES for c in s.matrix.compile)
    if compiled_somewhere and s.workload.kind == "generate" and s.workload.new_tokens < 2:
        # transformers compiles the decoding steps only (the prefill runs eager), and one new token comes
        # from the prefill: such a case would compile nothing and fail compile_effective for it.
        raise ScenarioError(
            "a compiled generate workload needs new_tokens of at least 2: transformers compiles only the "
            "decoding steps, and the first new token comes from the uncompiled prefill",
            source=s.source_file,
            field="workload.new_tokens",
        )
    for step in s.steps:
        if walk.unloaded and OPS[step.op].changes_state:
            raise walk.fail(
                step,
                f"{step.op} after merge_and_unload: the model is a plain model now, with no adapter to act on",
            )
        OPS[step.op].check(walk, step)
        if step.expect.raises is None:  # a step declared to raise leaves the adapters as they were
            walk.state = OPS[step.op].transition(walk.state, step)
        if step.expect.matches_reference is not None and "matches_reference" not in OPS[step.op].produces:
            raise walk.fail(
                step, f"expect.matches_reference: a {step.op} step makes no model call to compare"
            )
        if step.expect.distinguishable is not None and "distinguishable" not in OPS[step.op].produces:
            raise walk.fail(
                step, f"expect.distinguishable: a {step.op} step does not change the adapter state"
            )
        if step.expect.distinguishable is False and OPS[step.op].checks_responses:
            raise walk.fail(step, "expect.distinguishable = false: served adapters must always be told apart")
        counts = [k for k in ("recompiles", "graph_breaks", "cuda_graph_recordings") if _declares(step, k)]
        calls_model = OPS[step.op].checks_output or OPS[step.op].checks_responses
        if counts and not calls_model and step.expect.raises is None:
            # Dynamo compiles only inside a model call: a count here is 0 whatever the library does.
            raise walk.fail(
                step,
                f"expect.{counts[0]}: a {step.op} step makes no model call, so nothing can be counted there "
                "(put the expectation on the next step that calls the model)",
            )
        if _declares(step, "recompiles") and not compiled_somewhere:
            raise walk.fail(
                step, "expect.recompiles needs a compiled model (matrix.compile other than 'none')"
            )
        if step.expect.cuda_graph_recordings is not None and not graphs_somewhere:
            raise walk.fail(
                step,
                "expect.cuda_graph_recordings needs a compile with CUDA graphs "
                f"(matrix.compile with backend 'inductor' and mode one of {', '.join(CUDA_GRAPH_MODES)})",
            )
        _check_per_compile(s, step)
        for kf in step.known_failures:
            _check_known_failure(s, step, kf)
    for kf in s.expect.known_failures:
        _check_known_failure(s, None, kf)


def check_serving(s: Scenario) -> Scenario:
    """A serve step sets the model up itself for each strategy: it is the scenario's only step, and the
    strategy axis belongs to it (all strategies when the matrix names none)."""
    serves = [st for st in s.steps if OPS[st.op].checks_responses]
    if not serves:
        if s.matrix.strategy:
            raise ScenarioError(
                "the strategy axis needs a serve step", source=s.source_file, field="matrix.strategy"
            )
        for step in s.steps:
            for key in ("wrong_responses", "recompiles_after_warmup", "faster_than"):
                if getattr(step.expect, key):
                    raise ScenarioError(
                        f"expect.{key}: only a serve step decides it",
                        source=s.source_file,
                        field=step.label,
                    )
        return s
    if len(s.steps) > 1:
        raise ScenarioError(
            "a serve step is the scenario's only step: each strategy loads its adapters and compiles itself "
            "(put other steps in another scenario)",
            source=s.source_file,
            field=serves[0].label,
        )
    if not s.matrix.strategy:
        s = dataclasses.replace(s, matrix=dataclasses.replace(s.matrix, strategy=SERVING_STRATEGIES))
    if serves[0].expect.faster_than and serves[0].serve.requests < MIN_SAMPLES:
        raise ScenarioError(
            f"expect.faster_than: decided from a confidence interval over the requests' latencies, which needs "
            f"at least {MIN_SAMPLES} requests (requests = {serves[0].serve.requests})",
            source=s.source_file,
            field=serves[0].label,
        )
    for strategy, _ in serves[0].expect.faster_than:
        if strategy not in s.matrix.strategy:
            raise ScenarioError(
                f"expect.faster_than.{strategy}: not a strategy of the matrix ({', '.join(s.matrix.strategy)}): "
                "no case of the run could be compared with",
                source=s.source_file,
                field=serves[0].label,
            )
    return s


def check_count_expectations_compiled(s: Scenario) -> None:
    """A recompile or graph-break expectation on a step before the compile step (or with none) is judged on
    an eager model, where no count exists: it could only be 'not evaluated', so it is refused here."""
    compile_at = next((st.index for st in s.steps if OPS[st.op].compiles), None)
    for step in s.steps:
        if compile_at is not None and step.index >= compile_at:
            return
        for key in ("recompiles", "graph_breaks", "cuda_graph_recordings"):
            if _declares(step, key):
                where = f"step {compile_at}" if compile_at else "no step: the scenario has no compile step"
                raise ScenarioError(
                    f"expect.{key} on a step before the model is compiled (compiled at {where}): "
                    "nothing can be counted there",
                    source=s.source_file,
                    field=step.label,
                )


def _declares(step: Step, key: str) -> bool:
    """The step states a count for `key`, for every case or per compile setting."""
    return getattr(step.expect, key) is not None or (
        key == "recompiles" and bool(step.expect.recompiles_by_compile)
    )


def _check_per_compile(s: Scenario, step: Step) -> None:
    """expect.recompiles as a table: one comparison for each compiled setting of the matrix, no other key (a
    compiled case left without one would go unchecked; a label of no case is a typo)."""
    given = [label for label, _ in step.expect.recompiles_by_compile]
    if not given:
        return
    compiled = [c.label for c in s.matrix.compile if c.enabled]
    for label in given:
        if label not in compiled:
            raise ScenarioError(
                f"expect.recompiles.{label}: not a compiled setting of the matrix "
                f"(compile labels: {', '.join(compiled) or 'none'})",
                source=s.source_file,
                field=step.label,
            )
    missing = [label for label in compiled if label not in given]
    if missing:
        raise ScenarioError(
            f"expect.recompiles gives no comparison for {', '.join(missing)}: one per compiled setting",
            source=s.source_file,
            field=step.label,
        )


def _check_known_failure(s: Scenario, step: Step | None, kf: KnownFailure) -> None:
    where = step.label if step else "expect.known_failures"
    if step is not None and kf.expectation not in OPS[step.op].produces:
        # A marker no outcome can ever match would sit there forever, hiding nothing and misleading readers.
        raise ScenarioError(
            f"known_failure names {kf.expectation!r}, which a {step.op} step never decides "
            f"(it decides: {', '.join(sorted(OPS[step.op].produces))})",
            source=s.source_file,
            field=where,
        )
    axis_values = {
        "precision": s.matrix.precision,
        "compile": tuple(c.label for c in s.matrix.compile),
        "hotswap_path": s.matrix.hotswap_path,
        "strategy": s.matrix.strategy,
    }
    for axis, values in kf.when:
        for v in values:
            if v not in axis_values[axis]:
                raise ScenarioError(
                    f"known_failure.when.{axis} names {v!r}, not a value of the matrix "
                    f"({', '.join(axis_values[axis])})",
                    source=s.source_file,
                    field=where,
                )
