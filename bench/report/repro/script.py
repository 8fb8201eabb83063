"""A standalone reproduction script for each failing case: the kind one attaches to an upstream bug report.

The script needs torch, transformers and peft only (never peft-bench). It rebuilds the same model (a
built-in one from its config and seed) and the same adapters (seeded randn * init_std, saved with
save_pretrained), makes the scenario's API calls up to the failing step with plain library calls, and then
checks what failed: the output against a freshly loaded reference, the recompile or graph-break count, or the
exception. It prints "REPRODUCED: ..." and exits 1 when the failure happens, "NOT REPRODUCED" and 0 otherwise.

The scenario file the case ran from supplies what the results do not hold (adapter specs, workload, compile
options); a case whose scenario cannot be found, or whose steps changed since the run, gets no script and a
reason instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.engine.probes.compile import CompileWindow, _one_line
from bench.errors import BenchInputError
from bench.ops import OPS
from bench.ops.script_text import ReproUnsupported
from bench.report.repro.assemble import Target, assemble, find_target, repro_file_name
from bench.report.repro.writer import Writer
from bench.results.atomic import write_text
from bench.results.records import CaseResult, Outcome, Results
from bench.scenario import load_scenario
from bench.spec.cases import Case, expand
from bench.spec.counts import CountBound
from bench.spec.schema import Scenario, Step
from bench.spec.state import AdapterState

REPRO_DIR = "repro"
# Verdicts that carry a failure worth reproducing (an xfail is a known upstream bug: the report's best case).
REPRO_VERDICTS = ("fail", "xfail", "error")


@dataclass(frozen=True)
class Repro:
    case_id: str
    path: str | None  # relative to the results folder
    note: str  # what the script checks, or why there is none


def _resolve_scenario(case: CaseResult, roots: tuple[Path, ...]) -> Path:
    given = Path(case.scenario_file)
    for candidate in [given, *(r / given for r in roots)]:
        if candidate.is_file():
            return candidate
    raise ReproUnsupported(
        f"scenario file {case.scenario_file} not found (looked in {', '.join(map(str, roots))})"
    )


def case_for(result: CaseResult, scenario: Scenario) -> Case:
    for c in expand(scenario):
        if c.id == result.case_id:
            return c
    raise ReproUnsupported(f"the scenario file no longer has case {result.case_id} (its matrix changed)")


def _check_unchanged(result: CaseResult, scenario: Scenario) -> None:
    recorded = {s.index: s.op for s in result.steps}
    for step in scenario.steps:
        if step.index in recorded and recorded[step.index] != step.op:
            raise ReproUnsupported(
                f"the scenario changed since the run: step {step.index} was {recorded[step.index]}, now {step.op}"
            )


# ---------------------------------------------------------------------------------------------------------
# main()'s body: the steps, and the check of what failed (assemble.py writes the rest of the file)


def _check(
    w: Writer, target: Target, step: Step | None, state: AdapterState, previous: AdapterState | None = None
) -> None:
    """The failed expectation, checked after the target step (or after every step for a whole-case one)."""
    o = target.outcome
    what = f"step {step.index} ({step.op})" if step else "the case"
    counts = "totals" if target.scenario_level else "window"
    if o.expectation in ("recompiles", "graph_breaks"):
        cmp = CountBound.parse(o.expected)
        noun = o.expectation.replace("_", " ")
        w.emit(
            f"print({what!r}, {counts}.recompiles, 'recompile(s),', {counts}.graph_breaks, 'graph break(s)')"
        )
        w.emit(f"print('\\n'.join({counts}.reasons[:3]))")
        with w.block(f"if not ({counts}.{o.expectation} {cmp.op} {cmp.value}):"):
            w.emit(
                f"reproduced(f'{what}: {{{counts}.{o.expectation}}} {noun}, expected {o.expected}: ' "
                f"+ '; '.join({counts}.reasons[:3]))"
            )
    elif o.expectation == "matches_reference":
        slots = [(s.name, "added" if s.added else "loaded", s.adapter) for s in state.effective]
        active = [s.name for s in state.effective]
        want = o.expected == "true"
        w.emit(f"check_output(out, reference({slots!r}, {active!r}), {what!r}, want={want!r})")
    elif o.expectation == "distinguishable" and previous is not None:

        def ref(st: AdapterState) -> str:
            slots = [(s.name, "added" if s.added else "loaded", s.adapter) for s in st.effective]
            return f"reference({slots!r}, {[s.name for s in st.effective]!r})"

        w.emit(f"effect = ({ref(state)} - {ref(previous)}).abs().max().item()")
        w.emit(f"print({what!r}, 'the new state moves the reference logits by', effect)")
        # The run's margin is in units of its tolerance; the script shows the raw difference (0: no check).
        with w.block("if effect == 0:"):
            w.emit(f"reproduced(f'{what}: the new and the previous state give the same reference logits')")
    elif not _own_check(w, o.expectation, step, state, what):
        raise ReproUnsupported(f"the repro writer does not check {o.expectation!r} yet")
    w.emit("print('NOT REPRODUCED: the check that failed in the run holds here')")


def _own_check(w: Writer, expectation: str, step: Step | None, state: AdapterState, what: str) -> bool:
    """An expectation only the step's op decides: the op writes its check (bench/ops, script_check)."""
    op = OPS[step.op] if step is not None else None
    return (
        op is not None
        and expectation in op.own_expectations
        and op.script_check(w, expectation, step, state, what)
    )


def _raising_step(w: Writer, step: Step, o: Outcome) -> None:
    what = f"step {step.index} ({step.op})"
    with w.block("try:"):
        w.op(step)
    with w.block("except Exception as exc:"):
        if o.expectation == "succeeds":
            w.emit("traceback.print_exc()")
            w.emit(f"reproduced(f'{what} raised {{type(exc).__name__}}: {{exc}}')")
        else:
            with w.block(f"if {o.expected!r} not in [c.__name__ for c in type(exc).__mro__]:"):
                got = f"{what}: expected {o.expected}, got "
                w.emit(f"reproduced({got!r} + f'{{type(exc).__name__}}: {{exc}}')")
            w.emit(f"print({what!r}, {f'raised {o.expected}, as expected'!r})")
    if o.expectation == "raises":
        with w.block("else:"):
            w.emit(f"reproduced({f'{what}: expected {o.expected}, nothing was raised'!r})")
    else:
        w.emit("print('NOT REPRODUCED: the step raised nothing')")


def repro_script(result: CaseResult, results: Results, case: Case) -> str:
    s = case.scenario
    # `method`, not `type`: a DoRA spec is type "lora", and a script would build it as plain LoRA.
    other = sorted({a.method for a in s.adapters if a.generated and a.method != "lora"})
    if other:
        raise ReproUnsupported(f"the scripts build plain LoRA adapters only, not {', '.join(other)} (yet)")
    target = find_target(result)
    last = target.step or max((st.index for st in s.steps), default=0)
    needed = [st for st in s.steps if st.index <= last]
    w = Writer(case, adapters_used=frozenset(k for st in needed for k in (st.adapter, *st.cycle) if k))
    # Every script counts recompiles and graph breaks with the harness's own window (bench.engine.probes.compile).
    w.carry(_one_line, CompileWindow)
    if target.scenario_level:
        w.emit("totals = Totals()")
    state = previous = AdapterState()
    for st in needed:
        previous, state = state, OPS[st.op].transition(state, st)
        args = ", ".join(f"{k}={v!r}" for k, v in OPS[st.op].args(st).items())
        w.emit("")
        w.emit(f"# step {st.index}: {st.op}" + (f" ({args})" if args else ""))
        if st.index == target.step:
            w.emit("# ^ the step that failed in the run")
            if target.outcome and target.outcome.expectation in ("succeeds", "raises"):
                _raising_step(w, st, target.outcome)
            else:
                with w.block("with CompileWindow() as window:"):
                    w.step(st, target=True)
                if target.outcome:
                    _check(w, target, st, state, OPS[st.op].contrast_state(previous))
        elif target.scenario_level:
            with w.block("with CompileWindow() as window:"):
                w.step(st)
            w.emit("totals.add(window)")
        else:
            w.step(st)
    w.emit("")
    if target.scenario_level:
        _check(w, target, None, state)
    elif target.step is None:
        w.emit("print('NOT REPRODUCED: every step ran without the error the run recorded')")
    return assemble(result, results, case, target, w)


def _case_of(r: CaseResult, roots: tuple[Path, ...]) -> Case:
    """The case a result ran: kept in the result itself; older results name their scenario file instead."""
    if r.case:
        return Case.from_dict(r.case)
    path = _resolve_scenario(r, roots)
    try:
        scenario = load_scenario(path)
    except BenchInputError as exc:
        raise ReproUnsupported(f"the scenario file no longer loads: {exc}") from None
    _check_unchanged(r, scenario)
    return case_for(r, scenario)


MAX_REPROS = 100  # scripts one report writes; each is a file, and the HTML report carries each one's text


def write_repros(results: Results, out_dir: Path, *, roots: tuple[Path, ...] = ()) -> dict[str, Repro]:
    """One script per failing case under out_dir/repro/. A case that cannot get one gets the reason."""
    out: dict[str, Repro] = {}
    written = 0
    for r in results.cases:
        if r.verdict not in REPRO_VERDICTS:
            continue
        if written >= MAX_REPROS:  # bounded: a run of thousands of failures gets the first scripts
            out[r.case_id] = Repro(r.case_id, None, f"no script: the report writes the first {MAX_REPROS}")
            continue
        written += 1
        try:
            case = _case_of(r, (*roots, out_dir))
            text = repro_script(r, results, case)
        except ReproUnsupported as exc:
            out[r.case_id] = Repro(r.case_id, None, f"no reproduction script: {exc}")
            continue
        rel = f"{REPRO_DIR}/{repro_file_name(r.case_id)}"
        write_text(Path(out_dir) / rel, text)
        target = find_target(r)
        what = f"step {target.step}" if target.step else "the whole case"
        out[r.case_id] = Repro(r.case_id, rel, f"reproduces {what}: python {rel}")
    return out
