"""Run one case in this process: load, apply each step under its probes, check, decide.

Called by the worker entry point (bench.worker.__main__) in a fresh process per case, so dynamo's caches
and the allocator start clean; torch's global state that a process keeps is still reset explicitly.
"""

from __future__ import annotations

import datetime as _dt
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cases import Case
from bench.judge.verdict import case_verdict, find_known, outcome, step_status
from bench.precision import TOLERANCES, needs_eager_forward_after_state_dict, unavailable_reason
from bench.probes.clock import Clock, repeat
from bench.probes.compile import configure_dynamo_for_counting, count_compiles, no_recompile_allowed
from bench.probes.memory import measure_memory
from bench.records import CaseResult, Outcome, StepRecord
from bench.scenario.schema import STATE_OPS, Step
from bench.sources.adapters import lora_config, resolve_adapter
from bench.sources.check import check_adapter_sources, check_adapters_fit, check_model_files
from bench.sources.models import resolve_model
from bench.worker.footprint import adapter_file_bytes, copy_floor_ms, model_footprint
from bench.worker.model import load_model, make_inputs, vocab_size_of
from bench.worker.oom import is_out_of_memory
from bench.worker.reference import ReferenceOracle
from bench.worker.state import AdapterState
from bench.worker.subject import Subject


@dataclass
class _StepRun:
    """What happened during one step, before it is decided."""

    op_time_ms: float | None = None
    op_result: Any = None  # what the op reports: TrainStats, RepeatStats, active adapter names
    first_call_ms: float | None = None
    first_output: Any = None
    timing: Any = None
    op_error: BaseException | None = None
    recompile_errors: list[str] = field(default_factory=list)
    compiled: bool = False  # the model was compiled when the step ran: recompile expectations apply
    notes: list[str] = field(default_factory=list)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_case(
    case: Case,
    cache_root: Path,
    *,
    device: str | None = None,
    process_start: float | None = None,
    work_dir: Path | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    on_step: Callable[[Step], None] | None = None,
) -> CaseResult:
    """Run one case. `work_dir` receives what the case writes (saved adapters); default a temporary folder.

    trust_remote_code / allow_pickle: the command line's opt-ins (the scenario's own are added to them).
    on_step is called before each step runs (the worker logs the step there, so a crash can be placed).
    """
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
    s = case.scenario
    policy = {
        "warmup": s.timing.warmup,
        "min_rounds": s.timing.min_rounds,
        "min_time_s": s.timing.min_time_s,
        "max_rounds": s.timing.max_rounds,
    }
    base = dict(
        case_id=case.id,
        scenario=s.name,
        scenario_file=s.source_file,
        params=case.params,
        device=device,
        timing_policy=policy,
        started_at=started_at,
    )

    skip = unavailable_reason(case.precision, device)
    if skip:
        return CaseResult(verdict="skip", reason=skip, **base)

    configure_dynamo_for_counting()
    torch.manual_seed(0)

    t = time.perf_counter()
    trust = trust_remote_code or s.trust_remote_code
    pickle_ok = allow_pickle or s.allow_pickle
    model_src = resolve_model(s.model, cache_root)
    # Before anything loads the model (a generated adapter is built on it): its own code, its weight files.
    check_model_files(
        s.model, model_src.location, model_src.kind, allow_pickle=pickle_ok, trust_remote_code=trust
    )
    adapters = {a.key: a for a in s.adapters}
    resolved = {
        k: resolve_adapter(a, model_src, cache_root, trust_remote_code=trust, allow_pickle=pickle_ok)
        for k, a in adapters.items()
    }
    locations = {k: r.location for k, r in resolved.items()}
    peft_types = check_adapter_sources(s, resolved, allow_pickle=pickle_ok)
    phases["resolve_sources_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model = load_model(
        model_src.location,
        case.precision,
        device,
        quant=s.quantization,
        trust_remote_code=trust,
        allow_pickle=pickle_ok,
    )
    phases["load_model_s"] = time.perf_counter() - t
    check_adapters_fit(s, model, resolved, peft_types)
    inputs = make_inputs(s.workload, vocab_size_of(model), device)
    measured = {k: adapter_file_bytes(loc) for k, loc in locations.items() if resolved[k].kind != "hub"}
    adapter_bytes = {k: n for k, n in measured.items() if n is not None}
    footprint = model_footprint(model, adapter_bytes)

    tolerance = TOLERANCES[case.precision]
    oracle = ReferenceOracle(
        model_location=model_src.location,
        precision=case.precision,
        device=device,
        inputs=inputs,
        workload=s.workload,
        adapter_locations=locations,
        adapter_configs={k: lora_config(a) for k, a in adapters.items() if a.generated},
        tolerance=tolerance,
        quant=s.quantization,
        trust_remote_code=trust,
        allow_pickle=pickle_ok,
    )
    subject = Subject(
        model=model,
        device=device,
        workload=s.workload,
        inputs=inputs,
        compile_setting=case.compile,
        hotswap_path=case.hotswap_path,
        precision=case.precision,
        quant=s.quantization,
        work_dir=Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="peft-bench-case-")),
        trust_remote_code=trust,
        allow_pickle=pickle_ok,
    )
    clock = Clock.for_device(device)
    subject.clock = clock

    state = AdapterState()
    records: list[StepRecord] = []
    halted: str | None = None
    steps_s = references_s = 0.0
    for step in s.steps:
        if halted:
            records.append(_not_run(step, halted))
            continue
        if step.op == "compile" and not case.compile.enabled:
            records.append(_skipped_compile(step))
            continue
        if on_step is not None:
            on_step(step)
        t = time.perf_counter()
        run, mem, comp, strict = _execute(subject, step, adapters, locations, clock, s.timing)
        steps_s += time.perf_counter() - t
        t = time.perf_counter()
        new_state = state if run.op_error is not None else _transition(state, step)
        record = _decide(case, step, run, mem, comp, strict, new_state, oracle, subject, adapter_bytes, clock)
        references_s += time.perf_counter() - t
        records.append(record)
        state = new_state
        if run.op_error is not None and step.expect.raises is None:
            halted = f"step {step.index} ({step.op}) raised {type(run.op_error).__name__}; the model state is unknown"

    phases["steps_s"] = steps_s
    phases["references_s"] = references_s
    phases["compile_s"] = sum(r.compile.compile_time_s for r in records if r.compile)
    total_recompiles = sum(r.compile.recompiles for r in records if r.compile)
    total_breaks = sum(r.compile.graph_breaks for r in records if r.compile)
    scenario_outcomes = _scenario_outcomes(case, total_recompiles, total_breaks)
    verdict, reason = case_verdict(records, scenario_outcomes)
    return CaseResult(
        verdict=verdict,
        reason=reason,
        steps=tuple(records),
        phases_s=phases,
        footprint=footprint,
        total_recompiles=total_recompiles,
        total_graph_breaks=total_breaks,
        scenario_outcomes=tuple(scenario_outcomes),
        wall_s=time.perf_counter() - started,
        **base,
    )


def _execute(subject: Subject, step: Step, adapters, locations, clock: Clock, timing):
    """Apply the op and make the step's model calls, inside the memory and compile probes."""
    run = _StepRun()
    run.compiled = subject.compiled is not None or subject.generate_compiled or step.op == "compile"
    strict = step.expect.strict and run.compiled
    # After train no file holds the weights: there is no reference to check against until save_adapter.
    calls_model = (step.op in STATE_OPS and step.op != "train") or step.op in ("forward", "generate")
    with measure_memory(subject.device) as mem, count_compiles() as comp:
        try:
            run.op_time_ms, run.op_result = clock.time_ms(lambda: subject.apply(step, adapters, locations))
        except Exception as exc:  # the library's answer to the call: decided against expect.raises
            if is_out_of_memory(exc):
                raise  # a fault of the run, not the library's answer: the case's error (see worker main)
            run.op_error = exc
        if run.op_error is None and step.op in STATE_OPS:
            flipped = _freeze_adapter_grads(subject.model)
            if flipped:
                run.notes.append(
                    f"requires_grad reset on {flipped} tensors after {step.op} (transformers flips it; "
                    "dynamo would recompile on the requires_grad guard)"
                )
        if run.op_error is None and step.op in STATE_OPS and run.compiled:
            if needs_eager_forward_after_state_dict(subject.precision, subject.device):
                ms, _ = clock.time_ms(lambda: subject.model(**subject.inputs.as_kwargs()))
                run.notes.append(
                    f"one eager forward ({ms:.3g} ms, untimed) after {step.op}: bitsandbytes 4-bit on CPU repacks "
                    "weights on an eager forward, and state_dict() unpacks them; without it the next compiled "
                    "call recompiles on a size guard"
                )
        if run.op_error is None and calls_model:
            call = (
                subject.generate
                if step.op == "generate"
                else (subject.forward if step.op == "forward" else subject.verification_call)
            )
            (run.first_call_ms, run.first_output) = _guarded(strict, lambda: clock.time_ms(call), run)
            if step.op in ("forward", "generate"):
                run.timing = _guarded(
                    strict,
                    lambda: repeat(
                        clock,
                        call,
                        warmup=timing.warmup,
                        min_rounds=timing.min_rounds,
                        min_time_s=timing.min_time_s,
                        max_rounds=timing.max_rounds,
                    ),
                    run,
                )
    return run, mem.stats, comp.stats, strict


def _guarded(strict: bool, fn, run: _StepRun):
    """Run fn under error_on_recompile when strict. A RecompileError is recorded with its guard text and the
    call is made again without the patch, so the step still yields its output and its counts."""
    try:
        with no_recompile_allowed(strict):
            return fn()
    except Exception as exc:
        if not strict or not _is_recompile_error(exc):
            raise
        run.recompile_errors.append(" ".join(str(exc).split())[:800])
        return fn()


def _is_recompile_error(exc: BaseException) -> bool:
    from torch._dynamo.exc import RecompileError

    while exc is not None:
        if isinstance(exc, RecompileError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _freeze_adapter_grads(model) -> int:
    flipped = 0
    for p in model.parameters():
        if p.requires_grad:
            p.requires_grad_(False)
            flipped += 1
    return flipped


def _transition(state: AdapterState, step: Step) -> AdapterState:
    if step.op == "add_adapter":
        return state.add(step.name, step.adapter, added=True)
    if step.op == "load_adapter":
        return (
            state.hotswap(step.name, step.adapter)
            if step.hotswap
            else state.add(step.name, step.adapter, added=False)
        )
    if step.op == "set_adapter":
        return state.set_active(step.names)
    if step.op == "enable_adapters":
        return state.set_enabled(True)
    if step.op == "disable_adapters":
        return state.set_enabled(False)
    if step.op == "delete_adapter":
        return state.delete(step.name)
    if step.op == "load_pretrained":
        return AdapterState.loaded_pretrained(step.adapter)
    if step.op == "train":
        return state.trained(full=step.full)
    if step.op == "save_adapter":
        return state.saved(step.save_as)
    if step.op == "repeat_load":
        return state.repeated(step.mode, step.name or "rep", step.cycle, step.count)
    return state


def _decide(
    case: Case,
    step: Step,
    run: _StepRun,
    mem,
    comp,
    strict: bool,
    state: AdapterState,
    oracle: ReferenceOracle,
    subject: Subject,
    adapter_bytes: dict[str, int],
    clock: Clock,
) -> StepRecord:
    params = case.params
    kf = step.known_failures
    outcomes: list[Outcome] = []
    e = step.expect
    err_text = (
        f"{type(run.op_error).__name__}: {' '.join(str(run.op_error).split())[:600]}"
        if run.op_error
        else None
    )

    if e.raises is not None:
        names = [c.__name__ for c in type(run.op_error).__mro__] if run.op_error else []
        held = e.raises in names
        actual = err_text or "no exception"
        outcomes.append(
            outcome(
                "raises",
                e.raises,
                actual,
                held,
                f"expected {e.raises}, got {actual}",
                find_known(kf, "raises", params),
            )
        )
    else:
        outcomes.append(
            outcome(
                "succeeds",
                "no exception",
                err_text or "no exception",
                run.op_error is None,
                f"raised {err_text}",
                find_known(kf, "succeeds", params),
            )
        )

    if not run.compiled and (e.recompiles or e.graph_breaks):
        run.notes.append(
            "recompile and graph-break expectations not evaluated: the model is not compiled in this case"
        )
    if e.recompiles is not None and comp is not None and run.compiled:
        held = not run.recompile_errors and e.recompiles.holds(comp.recompiles)
        why = run.recompile_errors[0] if run.recompile_errors else "; ".join(comp.recompile_reasons[:3])
        outcomes.append(
            outcome(
                "recompiles",
                str(e.recompiles),
                str(comp.recompiles),
                held,
                f"{comp.recompiles} recompile(s), expected {e.recompiles}" + (f": {why}" if why else ""),
                find_known(kf, "recompiles", params),
            )
        )
    if e.graph_breaks is not None and comp is not None and run.compiled:
        outcomes.append(
            outcome(
                "graph_breaks",
                str(e.graph_breaks),
                str(comp.graph_breaks),
                e.graph_breaks.holds(comp.graph_breaks),
                f"{comp.graph_breaks} graph break(s), expected {e.graph_breaks}: "
                + "; ".join(comp.graph_break_reasons[:3]),
                find_known(kf, "graph_breaks", params),
            )
        )

    if step.op == "active_adapters" and run.op_error is None:
        want = list(state.active)
        outcomes.append(
            outcome(
                "active_adapters",
                str(want),
                str(run.op_result),
                run.op_result == want,
                f"active_adapters() returned {run.op_result}, expected {want}",
                find_known(kf, "active_adapters", params),
            )
        )
    train_stats = run.op_result if step.op == "train" and run.op_error is None else None
    repeat_stats = run.op_result if step.op == "repeat_load" and run.op_error is None else None
    if train_stats is not None:
        outcomes.append(
            outcome(
                "loss_decreases",
                f"< {train_stats.loss_first:.4g}",
                f"{train_stats.loss_last:.4g}",
                train_stats.loss_last < train_stats.loss_first,
                f"loss went from {train_stats.loss_first:.4g} to {train_stats.loss_last:.4g} in "
                f"{train_stats.steps} steps: the optimizer did not train the weights",
                find_known(kf, "loss_decreases", params),
            )
        )

    output = None
    if run.first_output is not None and not state.verifiable:
        run.notes.append(
            "output not checked: trained weights exist only in this model (save_adapter, then check)"
        )
    elif run.first_output is not None:
        if subject.workload.kind == "generate" and step.op != "forward":
            output = oracle.check_tokens(state, run.first_output)
        else:
            output = oracle.check_logits(state, run.first_output)
        wanted = e.matches_reference if e.matches_reference is not None else True
        if e.raises is None or e.matches_reference is not None:
            detail = (
                f"{output.mismatched_tokens} of the greedy tokens differ"
                if output.kind == "tokens"
                else f"max abs diff {output.max_abs_diff:.3g} (tolerance atol {output.atol:g} + rtol {output.rtol:g})"
                if output.max_abs_diff is not None
                else "output shape differs from the reference"
            )
            outcomes.append(
                outcome(
                    "matches_reference",
                    str(wanted).lower(),
                    str(output.matches).lower(),
                    output.matches == wanted,
                    f"output vs fresh reference ({output.reference_state}): {detail}",
                    find_known(kf, "matches_reference", params),
                )
            )

    effects = []
    moved_bytes = floor = None
    if step.op in ("load_adapter", "load_pretrained") and run.op_error is None:
        eff = oracle.effect(step.adapter, step.name or "default")
        effects.append(eff)
        outcomes.append(
            outcome(
                "adapter_effect",
                f"> {eff.threshold:g}",
                f"{eff.max_abs_effect:.3g}",
                eff.measurable,
                f"adapter {step.adapter!r} moves the logits by {eff.max_abs_effect:.3g}, not more than "
                f"{eff.threshold:g}: every output check would pass for a no-op adapter",
                find_known(kf, "adapter_effect", params),
            )
        )
        moved_bytes = adapter_bytes.get(step.adapter)
        if moved_bytes:
            floor = copy_floor_ms(moved_bytes, subject.device, clock)

    notes = list(run.notes)
    if run.recompile_errors:
        notes.append(
            "RecompileError under error_on_recompile=True; the call was repeated unguarded to record the output"
        )
    status = step_status(outcomes)
    return StepRecord(
        index=step.index,
        op=step.op,
        args=_step_args(step),
        status=status,
        strict=strict,
        op_time_ms=run.op_time_ms,
        first_call_ms=run.first_call_ms,
        timing=run.timing,
        compile=comp,
        memory=mem,
        output=output,
        effects=tuple(effects),
        outcomes=tuple(outcomes),
        error=err_text,
        notes=tuple(notes),
        adapter_bytes=moved_bytes,
        copy_floor_ms=floor,
        train=train_stats,
        repeat=repeat_stats,
    )


def _step_args(step: Step) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for key in ("adapter", "name", "target_rank"):
        value = getattr(step, key)
        if value is not None:
            args[key] = value
    if step.names:
        args["names"] = list(step.names)
    if step.hotswap:
        args["hotswap"] = True
    # The other ops' arguments under their TOML names, so a report can tell a full fine-tuning baseline
    # from a LoRA run and label a repetition without the scenario file.
    if step.op == "train":
        args.update(steps=step.train_steps, learning_rate=step.learning_rate, full=step.full)
    elif step.op == "save_adapter":
        args["as"] = step.save_as
    elif step.op == "repeat_load":
        args.update(mode=step.mode, count=step.count, adapters=list(step.cycle))
    return args


def _unmeasured(step: Step, status: str, note: str) -> StepRecord:
    """A step that made no call: nothing was measured, and the note says why."""
    return StepRecord(
        index=step.index,
        op=step.op,
        args=_step_args(step),
        status=status,
        strict=False,
        op_time_ms=None,
        first_call_ms=None,
        timing=None,
        compile=None,
        memory=None,
        output=None,
        notes=(note,),
    )


def _not_run(step: Step, why: str) -> StepRecord:
    return _unmeasured(step, "not_run", why)


def _skipped_compile(step: Step) -> StepRecord:
    return _unmeasured(step, "pass", "compile setting 'none': the model stays eager")


def _scenario_outcomes(case: Case, total_recompiles: int, total_breaks: int) -> list[Outcome]:
    e = case.scenario.expect
    out = []
    if e.total_recompiles is not None:
        out.append(
            outcome(
                "recompiles",
                str(e.total_recompiles),
                str(total_recompiles),
                e.total_recompiles.holds(total_recompiles),
                f"{total_recompiles} recompile(s) in the case, expected {e.total_recompiles}",
                find_known(e.known_failures, "recompiles", case.params),
            )
        )
    if e.total_graph_breaks is not None:
        out.append(
            outcome(
                "graph_breaks",
                str(e.total_graph_breaks),
                str(total_breaks),
                e.total_graph_breaks.holds(total_breaks),
                f"{total_breaks} graph break(s) in the case, expected {e.total_graph_breaks}",
                find_known(e.known_failures, "graph_breaks", case.params),
            )
        )
    return out
