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

import contextlib
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from bench.atomic import write_text
from bench.cases import Case, expand
from bench.errors import BenchInputError
from bench.records import CaseResult, Outcome, Results
from bench.scenario import load_scenario
from bench.scenario.schema import STATE_OPS, AdapterSpec, Comparison, Scenario, Step
from bench.sources.models import BUILTIN_MODELS, BUILTIN_PREFIX, BUILTIN_SEED

# The harness's own transitions (private by name, shared on purpose): the script's reference then holds
# exactly the state the failed check used.
from bench.worker.execute import _transition
from bench.worker.state import AdapterState

REPRO_DIR = "repro"
# Verdicts that carry a failure worth reproducing (an xfail is a known upstream bug: the report's best case).
REPRO_VERDICTS = ("fail", "xfail", "error")
SUPPORTED_OPS = frozenset(
    {
        "enable_hotswap",
        "add_adapter",
        "load_adapter",
        "set_adapter",
        "enable_adapters",
        "disable_adapters",
        "delete_adapter",
        "compile",
        "forward",
        "generate",
        "active_adapters",
        "save_adapter",
        "load_pretrained",
        "repeat_load",
        "train",
    }
)
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


_HELPERS = '''

def build_adapter(base, config, seed, init_std, out):
    """A real LoRA adapter with non-zero B: LoRA's default init (B = 0) would not move the output."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * init_std)
            elif "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=gen) * init_std)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def load_model(location):
    model = AutoModelForCausalLM.from_pretrained(location, use_safetensors=True, **LOAD_KWARGS)
    if "device_map" not in LOAD_KWARGS:
        model.to(DEVICE)
    model.eval()
    model.requires_grad_(False)
    return model


def forward(model, compiled):
    return (compiled if compiled is not None else model)(**INPUTS).logits


def generate(model):
    out = model.generate(**INPUTS, **GENERATE_KWARGS)
    return out[:, INPUTS["input_ids"].shape[1] :]


def reference(slots, active):
    """The eager output of a freshly loaded model holding exactly `slots` (name, kind, key), `active` on."""
    ref = load_model(BASE)
    for name, kind, key in slots:
        if kind == "added":
            with torch.random.fork_rng(devices=[]):
                ref.add_adapter(LORA_CONFIGS[key](), adapter_name=name)
        else:
            ref.load_adapter(ADAPTERS[key], adapter_name=name)
    if len(active) > 1:
        ref.set_adapter(list(active))
    elif active:
        ref.set_adapter(active[0])
    ref.requires_grad_(False)
    return (generate(ref) if GENERATE else forward(ref, None)).cpu()


def reproduced(message):
    print("REPRODUCED:", message)
    sys.exit(1)


def check_output(actual, ref, what, want=True):
    actual = actual.cpu()
    if GENERATE:
        equal = actual.shape == ref.shape and bool((actual == ref).all())
        differ = int((actual != ref).sum()) if actual.shape == ref.shape else ref.numel()
        matches, detail = equal, f"{differ} of {ref.numel()} greedy tokens differ"
    elif actual.shape != ref.shape:
        matches, detail = False, f"shape {tuple(actual.shape)} vs reference {tuple(ref.shape)}"
    else:
        actual = actual.float()
        diff = (actual - ref).abs()
        matches = bool(torch.isfinite(actual).all()) and bool((diff <= ATOL + RTOL * ref.abs()).all())
        detail = f"max abs diff {diff.max().item():.3g} (tolerance atol {ATOL:g} + rtol {RTOL:g})"
    print(f"{what}: output vs a freshly loaded reference: {detail}")
    if matches != want:
        verb = "differs from" if want else "matches"
        reproduced(f"{what}: the output {verb} a freshly loaded reference with the same adapters ({detail})")


class CompileWindow:
    """Recompiles and graph breaks dynamo records while the block runs (compilation metrics, counters)."""

    def __enter__(self):
        from torch._dynamo.utils import clear_compilation_metrics, counters

        clear_compilation_metrics()
        self.breaks_before = sum(counters["graph_break"].values())
        return self

    def __exit__(self, *exc):
        from torch._dynamo.utils import counters, get_compilation_metrics

        reasons = [m.recompile_reason for m in get_compilation_metrics() if m.recompile_reason]
        self.recompiles = len(reasons)
        self.reasons = [" ".join(str(r).split(" User stack trace:")[0].split())[:400] for r in reasons]
        self.graph_breaks = sum(counters["graph_break"].values()) - self.breaks_before
        return False


class Totals:
    """Counts over the whole case, for an expectation on the case's total."""

    def __init__(self):
        self.recompiles, self.graph_breaks, self.reasons = 0, 0, []

    def add(self, window):
        self.recompiles += window.recompiles
        self.graph_breaks += window.graph_breaks
        self.reasons += window.reasons
'''

_TRAIN = '''

def train(model, steps, learning_rate, full, shape, seed=0):
    """The harness's loop: AdamW on a few fixed random token batches, cycled. LoRA: the active adapters'
    lora_* weights and modules_to_save copies are trained; full: every parameter."""
    if full:
        params = list(model.parameters())
    else:
        active = set(model.active_adapters())
        params = []
        for name, param in model.named_parameters():
            parts = name.split(".")
            adapter_tensor = any(p.startswith("lora_") for p in parts) or "modules_to_save" in parts
            if adapter_tensor and active & set(parts):
                params.append(param)
    model.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    gen = torch.Generator().manual_seed(seed)
    vocab = model.get_output_embeddings().weight.shape[0]
    batches = [torch.randint(3, vocab, shape, generator=gen).to(DEVICE) for _ in range(min(steps, 2))]
    losses = []
    model.train()
    with torch.enable_grad():
        for i in range(steps):
            ids = batches[i % len(batches)]
            optimizer.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    optimizer.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    count = sum(p.numel() for p in params)
    print(f"trained {count:,} parameters for {steps} steps: loss {losses[0]:.4g} -> {losses[-1]:.4g}")
    return losses
'''

_PEFT_HOTSWAP = '''

def peft_hotswap(model, location, adapter_name):
    """PEFT's hotswap on a transformers model: the calls peft.utils.hotswap.hotswap_adapter makes."""
    config = PeftConfig.from_pretrained(location)
    check_hotswap_configs_compatible(model.peft_config[adapter_name], config)
    state_dict = load_peft_weights(location, device=DEVICE)
    mapped = {}
    for key, value in state_dict.items():  # base_model.model.<module>.lora_A.weight -> <module>.lora_A.<name>.weight
        parts = key.removeprefix("base_model.model.").split(".")
        for i, part in enumerate(parts):
            if part.startswith("lora_") and i + 1 < len(parts) and parts[i + 1] != adapter_name:
                parts.insert(i + 1, adapter_name)
                break
        mapped[".".join(parts)] = value
    hotswap_adapter_from_state_dict(model, mapped, adapter_name, config)
'''


# ---------------------------------------------------------------------------------------------------------
# Script text


@dataclass
class _Writer:
    """Emits main()'s body while tracking what the model under test looks like, as the harness's Subject."""

    case: Case
    lines: list[str] = field(default_factory=list)
    depth: int = 1
    compiled: bool = False
    generate_compiled: bool = False
    loaded_any: bool = False
    pending_target_rank: int | None = None
    uses_peft_hotswap: bool = False
    uses_train: bool = False
    adapters_used: frozenset[str] = frozenset()  # keys the replayed steps load: only these are built

    def emit(self, text: str = "") -> None:
        self.lines.append(("    " * self.depth + text) if text else "")

    @contextlib.contextmanager
    def block(self, header: str):
        self.emit(header)
        self.depth += 1
        before = len(self.lines)
        try:
            yield
        finally:
            if len(self.lines) == before:
                self.emit("pass")
            self.depth -= 1

    @property
    def generate(self) -> bool:
        return self.case.scenario.workload.kind == "generate"

    def call(self, op: str) -> str:
        if op == "generate" or (op != "forward" and self.generate):
            return "generate(model)"
        return "forward(model, compiled)"

    def _prepare(self, rank: int) -> None:
        self.emit(
            f"prepare_model_for_compiled_hotswap(model, target_rank={rank}, config=model.peft_config, "
            'check_compiled="error")'
        )

    def _after_first_load(self) -> None:
        if not self.loaded_any and self.pending_target_rank is not None:
            self.emit("# PEFT's recipe: prepare for compiled hotswap right after the first adapter is loaded")
            self._prepare(self.pending_target_rank)
            self.pending_target_rank = None
        self.loaded_any = True

    def op(self, step: Step) -> None:
        """The step's API call, as the harness makes it (bench/worker/subject.py)."""
        path = self.case.hotswap_path
        if step.op == "enable_hotswap":
            if path == "transformers":
                self.emit(
                    f'model.enable_peft_hotswap(target_rank={step.target_rank}, check_compiled="error")'
                )
            elif self.loaded_any:
                self._prepare(step.target_rank)
            else:
                self.emit("pass  # PEFT path: prepare_model_for_compiled_hotswap runs after the first load")
                self.pending_target_rank = step.target_rank
        elif step.op == "add_adapter":
            self.emit(f"model.add_adapter(LORA_CONFIGS[{step.adapter!r}](), adapter_name={step.name!r})")
            self._after_first_load()
        elif step.op == "load_adapter" and not step.hotswap:
            self.emit(f"model.load_adapter(ADAPTERS[{step.adapter!r}], adapter_name={step.name!r})")
            self._after_first_load()
        elif step.op == "load_adapter" and path == "transformers":
            self.emit(
                f"model.load_adapter(ADAPTERS[{step.adapter!r}], adapter_name={step.name!r}, hotswap=True)"
            )
        elif step.op == "load_adapter":
            self.uses_peft_hotswap = True
            self.emit(f"peft_hotswap(model, ADAPTERS[{step.adapter!r}], {step.name!r})")
        elif step.op == "set_adapter":
            names = list(step.names) if len(step.names) > 1 else step.names[0]
            self.emit(f"model.set_adapter({names!r})")
        elif step.op in ("enable_adapters", "disable_adapters"):
            self.emit(f"model.{step.op}()")
        elif step.op == "delete_adapter":
            self.emit(f"model.delete_adapter({step.name!r})")
        elif step.op == "compile":
            self._compile()
        elif step.op == "active_adapters":
            self.emit("names = list(model.active_adapters())")
            self.emit("print('active_adapters():', names)")
        elif step.op == "save_adapter":
            self.emit(f"ADAPTERS[{step.save_as!r}] = f'{{work}}/saved/{_ident(step.save_as)}'")
            self.emit(f"model.save_pretrained(ADAPTERS[{step.save_as!r}])  # the active adapter")
        elif step.op == "load_pretrained":
            self.emit(
                "# AutoModelForCausalLM.from_pretrained(<adapter folder>): a new model; transformers finds"
            )
            self.emit("# the base through adapter_config.json and loads the adapter on it as 'default'")
            self.emit(f"model = load_model(ADAPTERS[{step.adapter!r}])")
            self.emit("compiled = None")
            self.compiled = False
            self.loaded_any = True
        elif step.op == "repeat_load":
            self._repeat_load(step)
        elif step.op == "train":
            self.uses_train = True
            wl = self.case.scenario.workload
            self.emit(
                f"losses = train(model, steps={step.train_steps!r}, learning_rate={step.learning_rate!r}, "
                f"full={step.full!r}, shape=({wl.batch_size!r}, {wl.seq_len!r}))"
            )

    def _repeat_load(self, step: Step) -> None:
        """The harness's repetitions (bench/worker/subject.py), as a plain loop."""
        base = step.name or "rep"
        self.emit(f"cycle = {list(step.cycle)!r}")
        with self.block(f"for i in range({step.count!r}):"):
            self.emit("location = ADAPTERS[cycle[i % len(cycle)]]")
            if step.mode == "side_by_side":
                self.emit(f"model.load_adapter(location, adapter_name=f'{base}{{i}}')")
            elif step.mode == "hotswap" and self.case.hotswap_path == "transformers":
                self.emit(f"model.load_adapter(location, adapter_name={base!r}, hotswap=True)")
            elif step.mode == "hotswap":
                self.uses_peft_hotswap = True
                self.emit(f"peft_hotswap(model, location, {base!r})")
            else:
                self.emit(f"model.load_adapter(location, adapter_name={base!r})")
                self.emit(f"model.delete_adapter({base!r})")

    def _compile(self) -> None:
        s = self.case.compile
        if not s.enabled:
            self.emit("pass  # compile setting 'none': the model stays eager")
        elif self.generate:
            mode = (s.mode or "default") if s.backend == "inductor" else None
            self.emit("# transformers' compile path for generate: a static cache and its own torch.compile")
            self.emit(
                f"cc = CompileConfig(backend={s.backend!r}, fullgraph={s.fullgraph!r}, dynamic={s.dynamic!r}, "
                f"mode={mode!r})"
            )
            self.emit(
                "cc._compile_all_devices = True  # transformers compiles only on accelerators unless told"
            )
            self.emit("model.generation_config.compile_config = cc")
            self.emit('model.generation_config.cache_implementation = "static"')
            self.generate_compiled = True
        else:
            kwargs = f"backend={s.backend!r}, fullgraph={s.fullgraph!r}, dynamic={s.dynamic!r}"
            if s.mode and s.mode != "default":
                kwargs += f", mode={s.mode!r}"
            self.emit(f"compiled = torch.compile(model, {kwargs})")
            self.compiled = True

    def model_calls(self, step: Step, *, target: bool) -> None:
        """The calls the harness makes after the op: the check call after an adapter change, the measured
        call on forward/generate (and, at the failing step, a few more, as the timing rounds make)."""
        if step.op in STATE_OPS:
            self.emit("model.requires_grad_(False)  # the harness resets it: dynamo guards on requires_grad")
            if (self.compiled or self.generate_compiled) and self.case.precision in ("nf4", "fp4"):
                with self.block(
                    "if DEVICE == 'cpu':  # the harness's eager forward: bitsandbytes repacks weights"
                ):
                    self.emit("model(**INPUTS)")
        # After train no file holds the weights: the harness makes no check call until they are saved.
        if (step.op in STATE_OPS and step.op != "train") or step.op in ("forward", "generate"):
            self.emit(f"out = {self.call(step.op)}")
            if target and step.op in ("forward", "generate"):
                with self.block("for _ in range(3):"):
                    self.emit(self.call(step.op))

    def step(self, step: Step, *, target: bool = False) -> None:
        self.op(step)
        self.model_calls(step, target=target)


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
    reason = " ".join(result.reason.split()).replace('"""', "'''")
    return [
        "#!/usr/bin/env python3",
        f'"""Reproduction of {result.case_id} ({result.verdict}), written by peft-bench.',
        "",
        *textwrap.wrap(reason, 100),
        "",
        f"Checks {what}.",
        f"Recorded with {libs} on {env.device}" + (f" ({env.gpu})" if env.gpu else "") + ".",
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
                f"def lora_config_{_ident(a.key)}():",
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
    entries = ", ".join(f"{a.key!r}: lora_config_{_ident(a.key)}" for a in adapters if a.generated)
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


def _ident(key: str) -> str:
    return re.sub(r"\W", "_", key)


def _check(w: _Writer, target: Target, step: Step | None, state: AdapterState) -> None:
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
    elif o.expectation == "adapter_effect":
        threshold = float(o.expected.lstrip("> "))
        name = step.name or "default"  # load_pretrained loads the adapter as "default"
        w.emit(f"effect = (reference([({name!r}, 'loaded', {step.adapter!r})], [{name!r}])")
        w.emit("          - reference([], [])).abs().max().item()")
        w.emit(f"print({what!r}, 'adapter {step.adapter} moves the logits by', effect)")
        with w.block(f"if not effect > {threshold!r}:"):
            w.emit(
                f"reproduced(f'{what}: adapter {step.adapter!r} moves the logits by {{effect:.3g}}: a no-op')"
            )
    elif o.expectation == "active_adapters":
        want = list(state.active)
        with w.block(f"if names != {want!r}:"):
            w.emit(f"reproduced(f'{what}: active_adapters() returned {{names}}, expected {want!r}')")
    elif o.expectation == "loss_decreases":
        with w.block("if not losses[-1] < losses[0]:"):
            w.emit(
                f"reproduced(f'{what}: the loss did not decrease: {{losses[0]:.4g}} -> {{losses[-1]:.4g}} in "
                f"{step.train_steps} steps')"
            )
    else:
        raise ReproUnsupported(f"the repro writer does not check {o.expectation!r} yet")
    w.emit("print('NOT REPRODUCED: the check that failed in the run holds here')")


def _raising_step(w: _Writer, step: Step, o: Outcome) -> None:
    what = f"step {step.index} ({step.op})"
    with w.block("try:"):
        w.op(step)
    with w.block("except Exception as exc:"):
        if o.expectation == "succeeds":
            w.emit("traceback.print_exc()")
            w.emit(f"reproduced(f'{what} raised {{type(exc).__name__}}: {{exc}}')")
        else:
            with w.block(f"if {o.expected!r} not in [c.__name__ for c in type(exc).__mro__]:"):
                w.emit(f"reproduced(f'{what}: expected {o.expected}, got {{type(exc).__name__}}: {{exc}}')")
            w.emit(f"print({what!r}, 'raised {o.expected}, as expected')")
    if o.expectation == "raises":
        with w.block("else:"):
            w.emit(f"reproduced('{what}: expected {o.expected}, nothing was raised')")
    else:
        w.emit("print('NOT REPRODUCED: the step raised nothing')")


def repro_script(result: CaseResult, results: Results, case: Case) -> str:
    s = case.scenario
    target = find_target(result)
    last = target.step or max((st.index for st in s.steps), default=0)
    needed = [st for st in s.steps if st.index <= last]
    bad = sorted({st.op for st in needed if st.op not in SUPPORTED_OPS})
    if bad:
        raise ReproUnsupported(f"the repro writer does not translate op(s) {', '.join(bad)} yet")
    w = _Writer(case, adapters_used=frozenset(k for st in needed for k in (st.adapter, *st.cycle) if k))
    if target.scenario_level:
        w.emit("totals = Totals()")
    state = AdapterState()
    for st in needed:
        state = _transition(state, st)
        args = ", ".join(f"{k}={v!r}" for k, v in _step_desc(st).items())
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
                    _check(w, target, st, state)
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


def _step_desc(step: Step) -> dict:
    out = {k: getattr(step, k) for k in ("adapter", "name", "target_rank") if getattr(step, k) is not None}
    if step.names:
        out["names"] = list(step.names)
    if step.hotswap:
        out["hotswap"] = True
    if step.op == "train":
        out.update(steps=step.train_steps, learning_rate=step.learning_rate, full=step.full)
    elif step.op == "save_adapter":
        out["as"] = step.save_as
    elif step.op == "repeat_load":
        out.update(mode=step.mode, count=step.count, adapters=list(step.cycle))
    return out


def _assemble(result: CaseResult, results: Results, case: Case, target: Target, w: _Writer) -> str:
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
    if case.hotswap_path == "peft":
        imports += [
            "from peft import PeftConfig",
            "from peft.utils.hotswap import (",
            "    check_hotswap_configs_compatible,",
            "    hotswap_adapter_from_state_dict,",
            "    prepare_model_for_compiled_hotswap,",
            ")",
            "from peft.utils.save_and_load import load_peft_weights",
        ]
    adapters = []
    for a in s.adapters:
        if a.key not in w.adapters_used:
            continue  # not loaded before the failing step: building it would only slow the script down
        if a.generated:
            adapters.append(
                f"        {a.key!r}: build_adapter(BASE, lora_config_{_ident(a.key)}(), seed={a.seed!r}, "
                f"init_std={a.init_std!r}, out=f'{{work}}/adapters/{_ident(a.key)}'),"
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
                _HELPERS.rstrip("\n"),
                *([_PEFT_HOTSWAP.rstrip("\n")] if case.hotswap_path == "peft" else []),
                *([_TRAIN.rstrip("\n")] if w.uses_train else []),
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
    from bench.precision import TOLERANCES

    t = TOLERANCES[case.precision]
    return t.atol, t.rtol


def write_repros(results: Results, out_dir: Path, *, roots: tuple[Path, ...] = ()) -> dict[str, Repro]:
    """One script per failing case under out_dir/repro/. A case that cannot get one gets the reason."""
    out: dict[str, Repro] = {}
    for r in results.cases:
        if r.verdict not in REPRO_VERDICTS:
            continue
        try:
            path = _resolve_scenario(r, (*roots, out_dir))
            try:
                scenario = load_scenario(path)
            except BenchInputError as exc:
                raise ReproUnsupported(f"the scenario file no longer loads: {exc}") from None
            _check_unchanged(r, scenario)
            case = case_for(r, scenario)
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
