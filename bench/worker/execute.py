"""Run one case in this process: load, apply each step under its probes, check, decide.

Called by the worker entry point (bench.worker.__main__) in a fresh process per case, so dynamo's caches
and the allocator start clean; torch's global state that a process keeps is still reset explicitly.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench.engine.oom import is_out_of_memory
from bench.engine.probes.clock import Clock, repeat
from bench.engine.probes.compile import configure_dynamo_for_counting, count_compiles, no_recompile_allowed
from bench.engine.probes.cudagraphs import count_cuda_graphs, with_cuda_graphs
from bench.engine.probes.memory import measure_memory
from bench.engine.subject import Subject
from bench.errors import error_text
from bench.ops import OPS
from bench.results.records import CaseResult, StepRecord, TimingPolicy
from bench.results.verdict import case_verdict
from bench.spec import host
from bench.spec.cases import Case
from bench.spec.codec import to_dict
from bench.spec.per_compile import scope_to_compile
from bench.spec.precision import needs_eager_forward_after_state_dict, unavailable_reason
from bench.spec.schema import Step
from bench.spec.state import AdapterState
from bench.worker.decide import decide, not_run_record, scenario_outcomes, skipped
from bench.worker.evidence import gather_evidence
from bench.worker.facts import StepRun
from bench.worker.harness import after_state_op
from bench.worker.prepare import Ready, set_up
from bench.worker.shapes import on_step_shape


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_case(case: Case, cache_root: Path, *, work_dir: Path | None = None, **options) -> CaseResult:
    """Run one case. `work_dir` receives what the case writes (saved adapters); default a temporary folder,
    removed when the case ends. Gradients are off for the case (train turns them on for its own loop) and
    back as they were afterwards: nothing process-wide is left behind.

    options: device, process_start, trust_remote_code / allow_pickle (the command line's opt-ins; the
    scenario's own are added to them), on_step (called before each step runs: the worker logs the step
    there, so a crash can be placed).
    """
    import torch

    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peft-bench-case-")))
        stack.enter_context(torch.no_grad())
        return _run_case(case, cache_root, work_dir=Path(work_dir), **options)


def _run_case(
    case: Case,
    cache_root: Path,
    *,
    work_dir: Path,
    device: str | None = None,
    process_start: float | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    require_oracles: bool = False,
    on_step: Callable[[Step], None] | None = None,
) -> CaseResult:
    started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    phases: dict[str, float] = {}
    # The libraries are imported here, up front, so that their import time lands in this phase instead of
    # inside whichever step first touches them.
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    if process_start is not None:
        phases["process_start_and_imports_s"] = max(0.0, time.time() - process_start)
    device = device or pick_device()
    # Known failures that cannot happen on this machine are dropped before anything is decided (bench.spec.host).
    host_facts = host.probe(host.named_in(case.scenario), device)
    scenario = host.scope_to_host(case.scenario, host_facts)
    # A `recompiles` table per compile setting becomes this case's own comparison (bench.spec.per_compile).
    case = replace(case, scenario=scope_to_compile(scenario, case.compile.label))
    s = case.scenario
    policy = TimingPolicy(
        warmup=s.timing.warmup,
        min_rounds=s.timing.min_rounds,
        min_time_s=s.timing.min_time_s,
        max_rounds=s.timing.max_rounds,
    )
    base = dict(
        case_id=case.id,
        scenario=s.name,
        scenario_file=s.source_file,
        params=case.params,
        device=device,
        timing_policy=policy,
        harness=to_dict(s.harness),
        started_at=started_at,
        host_facts=host_facts,
    )

    skip = unavailable_reason(case.precision, device)
    if skip:
        return CaseResult(verdict="skip", reason=skip, **base)

    configure_dynamo_for_counting()
    torch.manual_seed(0)

    trust = trust_remote_code or s.trust_remote_code
    pickle_ok = allow_pickle or s.allow_pickle
    ready = set_up(case, cache_root, device, work_dir, phases, trust=trust, pickle_ok=pickle_ok)
    records, steps_s, references_s = _run_steps(case, ready, on_step, require_oracles)

    phases["steps_s"] = steps_s
    phases["references_s"] = references_s
    phases["compile_s"] = sum(r.compile.compile_time_s for r in records if r.compile)
    total_recompiles = sum(r.compile.recompiles for r in records if r.compile)
    total_breaks = sum(r.compile.graph_breaks for r in records if r.compile)
    case_outcomes = scenario_outcomes(case, total_recompiles, total_breaks)
    verdict, reason = case_verdict(records, case_outcomes)
    return CaseResult(
        verdict=verdict,
        reason=reason,
        steps=tuple(records),
        phases_s=phases,
        footprint=ready.footprint,
        total_recompiles=total_recompiles,
        total_graph_breaks=total_breaks,
        scenario_outcomes=tuple(case_outcomes),
        wall_s=time.perf_counter() - started,
        **base,
    )


def _run_steps(
    case: Case, ready: Ready, on_step, require_oracles: bool = False
) -> tuple[list[StepRecord], float, float]:
    """Every step in order: run, gather its evidence, decide. After an unexpected raise the rest is not_run.
    Returns the records and the seconds spent in the steps and in the references."""
    s = case.scenario
    subject, clock, adapters, locations = ready.subject, ready.clock, ready.adapters, ready.locations
    state = AdapterState()
    records: list[StepRecord] = []
    halted: str | None = None
    steps_s = references_s = 0.0
    for step in s.steps:
        if halted:
            records.append(not_run_record(step, halted))
            continue
        op = OPS[step.op]
        skip = op.skip_note(case.compile)
        if skip is not None:
            records.append(skipped(step, skip))
            continue
        if on_step is not None:
            on_step(step)
        # A step on its own input shape: the model and both oracles run on it (bench.worker.shapes).
        with on_step_shape(ready, step) as oracles:
            t = time.perf_counter()
            run, mem, comp, strict = _execute(
                subject, step, adapters, locations, clock, s.timing, freeze=s.harness.freeze_params
            )
            steps_s += time.perf_counter() - t
            t = time.perf_counter()
            new_state = state if run.op_error is not None else op.transition(state, step)
            # The state the new one must be told apart from (docs/verdicts.md): only for a state op that ran,
            # meant to change the output, between two states a file can reproduce.
            contrast_with = op.contrast_state(state) if "distinguishable" in op.produces else None
            if run.op_error is not None or (contrast_with is not None and not contrast_with.verifiable):
                contrast_with = None
            evidence = gather_evidence(
                step, run, new_state, contrast_with, oracles, subject, ready.adapter_bytes, clock
            )
        record = decide(case.params, step, run, mem, comp, strict, new_state, evidence, require_oracles)
        references_s += time.perf_counter() - t
        records.append(record)
        state = new_state
        if run.op_error is not None and step.expect.raises is None:
            halted = f"step {step.index} ({step.op}) raised {type(run.op_error).__name__}; the model state is unknown"

    return records, steps_s, references_s


def _execute(subject: Subject, step: Step, adapters, locations, clock: Clock, timing, *, freeze: bool):
    """Apply the op and make the step's model calls, inside the memory and compile probes. `freeze`: the
    scenario's harness.freeze_params (reset requires_grad after each state op). Long because: the op and its
    model calls run inside the same probe contexts, which cannot be split across functions."""
    run = StepRun()
    op = OPS[step.op]
    run.compiled = (
        subject.compiled is not None
        or subject.generate_compiled
        or op.compiles
        or (op.checks_responses and subject.compile_setting.enabled)  # serve compiles inside its setup
    )
    strict = step.expect.strict and run.compiled
    # After train no file holds the weights: there is no reference to check against until save_adapter.
    calls_model = op.checks_output
    graph_mode = subject.compile_setting.mode if subject.compile_setting.backend == "inductor" else None
    with (
        measure_memory(subject.device) as mem,
        count_compiles() as comp,
        count_cuda_graphs(str(subject.device), graph_mode) as graphs,
    ):
        try:
            run.op_time_ms, run.op_result = clock.time_ms(
                lambda: OPS[step.op].apply(subject, step, adapters, locations)
            )
        except Exception as exc:  # the library's answer to the call: decided against expect.raises
            if is_out_of_memory(exc):
                raise  # a fault of the run, not the library's answer: the case's error (see worker main)
            run.op_error = exc
        if run.op_error is None and op.compiles:
            subject.compile_unverified = True  # set here, not by the op: a broken op cannot skip the check
        # serve compiles in its setup and makes its own calls: its stream must have compiled a frame.
        run.first_call_after_compile = op.checks_responses and run.compiled
        if run.op_error is None and op.changes_state:
            after_state_op(subject.model, step, freeze, run)
        if run.op_error is None and op.changes_state and run.compiled:
            if needs_eager_forward_after_state_dict(subject.precision, subject.device):
                ms, _ = clock.time_ms(lambda: subject.model(**subject.inputs.as_kwargs()))
                run.notes.append(
                    f"one eager forward ({ms:.3g} ms, untimed) after {step.op}: bitsandbytes 4-bit on CPU repacks "
                    "weights on an eager forward, and state_dict() unpacks them; without it the next compiled "
                    "call recompiles on a size guard"
                )
        # A refused op (it raised, as the step declares) is followed by a model call too: the model must
        # still give the previous state's output (bench.worker.decide, refusal_leaves_state).
        run.refused = run.op_error is not None and step.expect.raises is not None
        if (run.op_error is None and calls_model) or run.refused:
            run.first_call_after_compile = subject.compile_unverified
            subject.compile_unverified = False
            # The op's own measured call, or the workload's call that checks a state change. The checked
            # first call of a generate step also returns each step's logits (output_logits); the timed
            # rounds below are the plain call.
            call, first = subject.calls(op.call)
            try:
                (run.first_call_ms, first_output) = _guarded(strict, lambda: clock.time_ms(first), run)
                run.first_output = kept(first_output)
            except Exception as exc:
                if not run.refused or is_out_of_memory(exc):
                    raise
                run.call_error = error_text(exc)  # the refused op left a model that cannot run
            run.called_model = run.call_error is None
            if op.measures:
                last: list = []

                def timed_call():
                    # Keeps only the latest output (one reference, no list growth): the steady-state check.
                    last[:] = [call()]
                    return last[0]

                run.timing = _guarded(
                    strict,
                    lambda: repeat(
                        clock,
                        timed_call,
                        warmup=timing.warmup,
                        min_rounds=timing.min_rounds,
                        min_time_s=timing.min_time_s,
                        max_rounds=timing.max_rounds,
                    ),
                    run,
                )
                run.last_output = kept(last[0]) if last else None
                if op.call == "generate" and last:
                    # The steady-state check needs each step's logits too: one more call, untimed, after the
                    # rounds (the model as the rounds left it).
                    run.last_output = subject.generate_checked()
    return run, mem.stats, with_cuda_graphs(comp.stats, graphs.counts), strict


def kept(output):
    """A copy of a model call's output that later calls cannot overwrite. A model compiled with CUDA graphs
    (mode="reduce-overhead") returns tensors in the graph's own memory, which its next replay writes over:
    the output checked after the timed rounds must not be the rounds' storage."""
    import torch

    if isinstance(output, torch.Tensor):
        return output.detach().clone()
    if isinstance(output, tuple):
        return tuple(kept(o) for o in output)
    return output


def _guarded(strict: bool, fn, run: StepRun):
    """Run fn under error_on_recompile when strict. A RecompileError is recorded with its guard text and the
    call is made again without the patch, so the step still yields its output and its counts."""
    try:
        with no_recompile_allowed(strict):
            return fn()
    except Exception as exc:
        recompile_error = _recompile_error_in(exc) if strict else None
        if recompile_error is None:
            raise
        run.recompile_errors.append(error_text(recompile_error)[:800])
        return fn()


def _recompile_error_in(exc: BaseException | None) -> BaseException | None:
    """The RecompileError itself, where dynamo raised it wrapped in another exception."""
    from torch._dynamo.exc import RecompileError

    while exc is not None:
        if isinstance(exc, RecompileError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
