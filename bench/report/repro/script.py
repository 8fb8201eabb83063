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

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from bench.atomic import write_text
from bench.cases import Case, expand
from bench.errors import BenchInputError
from bench.ops import OPS
from bench.ops.state import AdapterState
from bench.records import CaseResult, Outcome, Results
from bench.report.repro.templates import HELPERS, TRAIN
from bench.report.repro.writer import Writer, doc_line, ident
from bench.scenario import load_scenario
from bench.scenario.schema import AdapterSpec, Comparison, Scenario, Step
from bench.sources.models import BUILTIN_MODELS, BUILTIN_PREFIX, BUILTIN_SEED

REPRO_DIR = "repro"
# Verdicts that carry a failure worth reproducing (an xfail is a known upstream bug: the report's best case).
REPRO_VERDICTS = ("fail", "xfail", "error")
_DTYPES = {"fp32": "torch.float32", "bf16": "torch.bfloat16", "fp16": "torch.float16"}


class ReproUnsupported(Exception):
    """Why no script can be written for a case (the report shows the reason instead)."""


@dataclass(frozen=True)
class Repro:
    case_id: str
    path: str | None  # relative to the results folder
    note: str  # what the script checks, or why there is none


@dataclass(frozen=True)
class Target:
    """What the script checks: one failed expectation of one step, or a whole-case count."""

    step: int | None  # None: replay every step (a crash, or a whole-case expectation)
    outcome: Outcome | None
    scenario_level: bool = False


def repro_file_name(case_id: str) -> str:
    return "repro_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", case_id).strip("_") + ".py"


def find_target(case: CaseResult) -> Target:
    for s in case.steps:
        if s.status == case.verdict:
            return Target(s.index, next((o for o in s.outcomes if o.status == case.verdict), None))
    o = next((o for o in case.scenario_outcomes if o.status == case.verdict), None)
    if o is not None:
        return Target(None, o, scenario_level=True)
    return Target(None, None)


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
# Script text


def _header(result: CaseResult, results: Results, target: Target) -> list[str]:
    env = results.environment
    libs = ", ".join(
        f"{k} {env.libraries[k]}" for k in ("torch", "transformers", "peft") if env.libraries.get(k)
    )
    o = target.outcome
    if o and target.step:
        what = f"step {target.step}: {o.expectation} (expected {o.expected}, got {o.actual})"
    elif o:
        what = f"the whole case: {o.expectation} (expected {o.expected}, got {o.actual})"
    else:
        what = "that every step runs (the case errored)"
    reason = doc_line(" ".join(result.reason.split()))
    return [
        "#!/usr/bin/env python3",
        doc_line(
            f'"""Reproduction of {result.case_id} ({result.verdict}), written by peft-bench.', opening=True
        ),
        "",
        *textwrap.wrap(reason, 100, break_long_words=False, break_on_hyphens=False),
        "",
        doc_line(f"Checks {what}."),
        doc_line(f"Recorded with {libs} on {env.device}" + (f" ({env.gpu})" if env.gpu else "") + "."),
        f"Needs only torch, transformers and peft. Run: python {repro_file_name(result.case_id)}",
        'Prints "REPRODUCED: ..." and exits 1 when the failure happens; "NOT REPRODUCED" and exits 0 otherwise.',
        '"""',
        "",
    ]


def _model_source(scenario: Scenario) -> list[str]:
    if scenario.model.startswith(BUILTIN_PREFIX):
        entry = BUILTIN_MODELS[scenario.model[len(BUILTIN_PREFIX) :]]
        return [
            f"# {scenario.model}: a tiny {entry['model_class']} built from this config and seed.",
            f"BUILTIN_CONFIG = {entry['config']!r}",
            "",
            "",
            "def build_base_model(out):",
            f"    config = transformers.{entry['config_class']}(**BUILTIN_CONFIG)",
            "    with torch.random.fork_rng(devices=[]):",
            f"        torch.manual_seed({BUILTIN_SEED})",
            f"        model = transformers.{entry['model_class']}(config)",
            "    model.generation_config.pad_token_id = config.pad_token_id",
            "    model.save_pretrained(out, safe_serialization=True)",
            "    return out",
        ]
    path = Path(scenario.model).expanduser()
    location = str(path.resolve()) if path.exists() else scenario.model
    return [
        "",
        "def build_base_model(out):",
        f"    return {location!r}  # a local folder or a Hub id, as the scenario names it",
    ]


def _lora_configs(adapters: tuple[AdapterSpec, ...]) -> list[str]:
    out = []
    for a in adapters:
        if a.generated:
            out += [
                "",
                "",
                f"def lora_config_{ident(a.key)}():",
                "    return LoraConfig(",
                '        task_type="CAUSAL_LM",',
                f"        r={a.rank!r},",
                f"        lora_alpha={a.alpha!r},",
                f"        target_modules={list(a.targets)!r},",
                f"        rank_pattern={dict(a.rank_pattern)!r},",
                f"        alpha_pattern={dict(a.alpha_pattern)!r},",
                f"        lora_dropout={a.lora_dropout!r},",
                f"        modules_to_save={list(a.modules_to_save) or None!r},",
                "    )",
            ]
    entries = ", ".join(f"{a.key!r}: lora_config_{ident(a.key)}" for a in adapters if a.generated)
    return [*out, "", "", f"LORA_CONFIGS = {{{entries}}}"]


def _load_kwargs(case: Case) -> list[str]:
    p = case.precision
    if p in _DTYPES:
        return [f"LOAD_KWARGS = {{'dtype': {_DTYPES[p]}}}"]
    q = case.scenario.quantization
    compute = _DTYPES[q.compute_dtype]
    if p == "int8":
        qc = "BitsAndBytesConfig(load_in_8bit=True)"
    else:
        qc = (
            f"BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type={p!r}, "
            f"bnb_4bit_compute_dtype={compute}, bnb_4bit_use_double_quant={q.double_quant!r})"
        )
    return [
        "from transformers import BitsAndBytesConfig",
        "",
        f"LOAD_KWARGS = {{'quantization_config': {qc}, 'device_map': 'auto', 'dtype': {compute}}}",
    ]


def _check(
    w: Writer, target: Target, step: Step | None, state: AdapterState, previous: AdapterState | None = None
) -> None:
    """The failed expectation, checked after the target step (or after every step for a whole-case one)."""
    o = target.outcome
    what = f"step {step.index} ({step.op})" if step else "the case"
    counts = "totals" if target.scenario_level else "window"
    if o.expectation in ("recompiles", "graph_breaks"):
        cmp = Comparison.parse(o.expected)
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
    elif o.expectation == "active_adapters":
        want = list(state.active)
        with w.block(f"if names != {want!r}:"):
            w.emit(f"reproduced(f'{what}: active_adapters() returned {{names}}, expected ' + {repr(want)!r})")
    elif o.expectation == "loss_decreases":
        with w.block("if not losses[-1] < losses[0]:"):
            w.emit(
                f"reproduced(f'{what}: the loss did not decrease: {{losses[0]:.4g}} -> {{losses[-1]:.4g}} in "
                f"{step.train_steps} steps')"
            )
    else:
        raise ReproUnsupported(f"the repro writer does not check {o.expectation!r} yet")
    w.emit("print('NOT REPRODUCED: the check that failed in the run holds here')")


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
    target = find_target(result)
    last = target.step or max((st.index for st in s.steps), default=0)
    needed = [st for st in s.steps if st.index <= last]
    w = Writer(case, adapters_used=frozenset(k for st in needed for k in (st.adapter, *st.cycle) if k))
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
    return _assemble(result, results, case, target, w)


def _assemble(result: CaseResult, results: Results, case: Case, target: Target, w: Writer) -> str:
    s = case.scenario
    wl = s.workload
    atol, rtol = _tolerance(result, case)
    imports = [
        "import shutil",
        "import sys",
        "import tempfile",
        "import traceback",
        "",
        "import peft",
        "import torch",
        "import transformers",
        "from peft import LoraConfig, get_peft_model",
        "from transformers import AutoModelForCausalLM, CompileConfig",
    ]
    imports += list(w.path.script_imports)
    adapters = []
    for a in s.adapters:
        if a.key not in w.adapters_used:
            continue  # not loaded before the failing step: building it would only slow the script down
        if a.generated:
            adapters.append(
                f"        {a.key!r}: build_adapter(BASE, lora_config_{ident(a.key)}(), seed={a.seed!r}, "
                f"init_std={a.init_std!r}, out=f'{{work}}/adapters/{ident(a.key)}'),"
            )
        else:
            adapters.append(f"        {a.key!r}: {a.path!r},")
    main = [
        "",
        "",
        "def main(work):",
        "    global BASE, ADAPTERS, INPUTS, GENERATE_KWARGS",
        "    print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)",
        "    BASE = build_base_model(f'{work}/base')",
        "    ADAPTERS = {",
        *adapters,
        "    }",
        "    torch.manual_seed(0)",
        "    torch.set_grad_enabled(False)",
        "    model = load_model(BASE)",
        "    compiled = None",
        "    # The fixed inputs: token ids from a seeded generator, avoiding pad/bos/eos (0-2).",
        f"    gen = torch.Generator().manual_seed({wl.seed!r})",
        "    vocab = model.get_output_embeddings().weight.shape[0]",
        f"    ids = torch.randint(3, vocab, ({wl.batch_size!r}, {wl.seq_len!r}), generator=gen)",
        "    INPUTS = {'input_ids': ids.to(DEVICE), 'attention_mask': torch.ones_like(ids).to(DEVICE)}",
        "    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0",
        f"    GENERATE_KWARGS = dict(max_new_tokens={wl.new_tokens!r}, min_new_tokens={wl.new_tokens!r}, "
        "do_sample=False, pad_token_id=pad)",
        *w.lines,
    ]
    return (
        "\n".join(
            [
                *_header(result, results, target),
                *imports,
                "",
                f"DEVICE = {result.device!r}",
                f"ATOL, RTOL = {atol!r}, {rtol!r}  # peft-bench's tolerance for {case.precision} logits",
                f"GENERATE = {wl.kind == 'generate'!r}",
                *_load_kwargs(case),
                "",
                *_model_source(s),
                *_lora_configs(s.adapters),
                HELPERS.rstrip("\n"),
                *([w.path.script_source.rstrip("\n")] if w.path.script_source else []),
                *([TRAIN.rstrip("\n")] if w.uses_train else []),
                *([merge_source()] if w.uses_merge else []),
                *main,
                "",
                "",
                'if __name__ == "__main__":',
                "    work = tempfile.mkdtemp(prefix='peft-repro-')",
                "    try:",
                "        main(work)",
                "    finally:",
                "        shutil.rmtree(work, ignore_errors=True)",
            ]
        )
        + "\n"
    )


def merge_source() -> str:
    """The merge ops' own functions (bench.ops.merge), so the script merges exactly as the run did."""
    import inspect

    from bench.ops import merge

    return "\n\n" + "\n\n".join(inspect.getsource(f) for f in (merge.tuner_layers, merge.merge_and_unload))


def _tolerance(result: CaseResult, case: Case) -> tuple[float, float]:
    for s in result.steps:
        if s.output is not None:
            return s.output.atol, s.output.rtol
    from bench.precision import TOLERANCES

    t = TOLERANCES[case.precision]
    return t.atol, t.rtol


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


def write_repros(results: Results, out_dir: Path, *, roots: tuple[Path, ...] = ()) -> dict[str, Repro]:
    """One script per failing case under out_dir/repro/. A case that cannot get one gets the reason."""
    out: dict[str, Repro] = {}
    for r in results.cases:
        if r.verdict not in REPRO_VERDICTS:
            continue
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
