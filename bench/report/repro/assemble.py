"""The text of a reproduction script around its main() body: header, imports, settings, the base model
and adapter builders, the helpers, and the harness's own functions the steps carried (bench.report.repro.writer).
"""

from __future__ import annotations

import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from bench.engine.sources.models import BUILTIN_MODELS, BUILTIN_PREFIX, BUILTIN_SEED
from bench.ops.script_text import ReproUnsupported, doc_line, ident
from bench.ops.templates import HELPERS
from bench.report.repro.writer import Writer
from bench.results.brief import clipped
from bench.results.records import CaseResult, Outcome, Results
from bench.spec.cases import Case
from bench.spec.precision import TOLERANCES, device_map
from bench.spec.schema import AdapterSpec, Scenario


@dataclass(frozen=True)
class Target:
    """What the script checks: one failed expectation of one step, or a whole-case count."""

    step: int | None  # None: replay every step (a crash, or a whole-case expectation)
    outcome: Outcome | None
    scenario_level: bool = False


def find_target(case: CaseResult) -> Target:
    for s in case.steps:
        if s.status == case.verdict:
            return Target(s.index, next((o for o in s.outcomes if o.status == case.verdict), None))
    o = next((o for o in case.scenario_outcomes if o.status == case.verdict), None)
    if o is not None:
        return Target(None, o, scenario_level=True)
    return Target(None, None)


_DTYPES = {"fp32": "torch.float32", "bf16": "torch.bfloat16", "fp16": "torch.float16"}


def repro_file_name(case_id: str) -> str:
    return "repro_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", case_id).strip("_") + ".py"


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
    reason = doc_line(" ".join(clipped(result.reason).split()))  # bounded: the full text is in results.json
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
        entry = BUILTIN_MODELS.get(scenario.model[len(BUILTIN_PREFIX) :])
        if entry is None:  # a results file from another peft-bench, or edited: a script cannot build it
            raise ReproUnsupported(f"{scenario.model} is not a built-in model of this peft-bench")
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
                *(
                    [f"        target_parameters={list(a.target_parameters)!r},"]
                    if a.target_parameters
                    else []
                ),
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
        "",
        *inspect.getsource(device_map).splitlines(),  # the worker's own rule, carried verbatim
        "",
        "",
        f"LOAD_KWARGS = {{'quantization_config': {qc}, "
        f"'device_map': device_map(DEVICE, torch.cuda.device_count()), 'dtype': {compute}}}",
    ]


def assemble(result: CaseResult, results: Results, case: Case, target: Target, w: Writer) -> str:
    """The whole script: the header, imports and settings, the model and adapter builders, the helpers and
    the source the steps carried (w.carried), then main() with the body the writer emitted. Long because: the
    script's text in file order."""
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
                f"init_std={a.init_std!r}, out=f'{{work}}/adapters/{ident(a.key)}'"
                + ("" if a.save_embedding_layers else ", save_embedding_layers=False")
                + "),"
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
                *(line for text in w.carried for line in ("", "", text)),
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


def _tolerance(result: CaseResult, case: Case) -> tuple[float, float]:
    for s in result.steps:
        if s.output is not None:
            return s.output.atol, s.output.rtol
    t = TOLERANCES[case.precision]
    return t.atol, t.rtol
