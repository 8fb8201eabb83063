"""The math oracle: the expected output of an adapter state computed without any peft code.

The library reference (reference.py) builds a fresh model with the same load_adapter / set_adapter calls as
the subject, so a bug inside those calls (the scaling taken from alpha_pattern, a key mapping) moves both alike.
This oracle reads each adapter's files itself (lora_files.py), loads a plain base model through
AutoModelForCausalLM.from_pretrained, and applies W + sum over active adapters of scaling * B @ A:

- fp32 / bf16 / fp16: merged into the weights in fp32, then the model is cast to the case dtype;
- int8 / nf4 / fp4: quantized weights cannot take a merge, so each target module gets a forward hook that adds
  scaling * (x @ A.T) @ B.T in fp32 to the quantized layer's output (what an unmerged LoRA layer computes);
- Conv1D (GPT-2): stored (in, out), so the delta is added transposed (as peft, whatever fan_in_fan_out says);
- target_parameters (a mixture of experts' fused expert weights): the delta per expert is added to the
  Parameter itself (oracle_params.py);
- LoRA on embed_tokens (an nn.Embedding: W + scaling * (B @ A).T) and on lm_head, tied or not:
  oracle_embedding.py;
- modules_to_save: the adapter's saved copy replaces the module's parameters (untied first, so a head tied to
  the embeddings does not change the embeddings);
- AdaLoRA is a LoRA delta B (A * E) with its own scaling; IA3 rescales each target's output, bias included
  (or, for feedforward targets, its input) by its learned vector: merged, hooked on quantized layers
  (method_files.py);
- DoRA (use_dora) merges m * (W + s B A) / ||W + s B A||_row instead (oracle_dora.py); on quantized precisions,
  and on a module that holds another active adapter beside a DoRA one, it is a MathOracleError (unverified);
- `added` slots (add_adapter, LoRA's default init B = 0, IA3's l = 1) and disabled adapters contribute nothing.

Within `with oracle.one_base():` every state is applied to one base model loaded once and undone exactly after
its run (oracle_base.py), bit for bit what a fresh model per state gives; outside it, a fresh model per state.
A serve step's fp32 LoRA adapters take a third way: each alone on its own rows of one batch (oracle_rows.py).
Every edit goes through an Edits (keep before an in-place change, replace, hook), or the undo cannot restore it.
It imports no peft module, directly or through the suite (a test runs it with peft blocked).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.engine.lora_files import AdapterWeights, is_conv1d
from bench.engine.method_files import merge_ia3, read_any_adapter
from bench.engine.model import Inputs, generate_kwargs
from bench.engine.oracle_base import Edits, SharedBase, settled
from bench.engine.oracle_dora import dora_conflict, dora_weight
from bench.engine.oracle_embedding import merge_embedding_deltas, untie_targets
from bench.engine.oracle_params import merge_param_deltas
from bench.results.measures import OracleAgreement
from bench.spec.precision import QUANTIZED, load_kwargs
from bench.spec.schema import Workload
from bench.spec.state import AdapterState


class MathOracleError(Exception):
    """The math oracle cannot express this state (a reason, not a crash): e.g. two active adapters that both
    replace the same modules_to_save module, which peft itself refuses."""


@dataclass
class MathOracle:
    model_location: str
    precision: str
    device: str
    inputs: Inputs
    workload: Workload
    adapter_locations: dict[str, str]
    quant: Any = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    _logits: dict[str, Any] = field(default_factory=dict)
    _tokens: dict[str, Any] = field(default_factory=dict)
    _gen_logits: dict[str, Any] = field(default_factory=dict)  # generate's per-step logits [steps, B, V]
    _adapters: dict[str, AdapterWeights] = field(default_factory=dict)
    fresh_loads: int = 0
    # Set only inside one_base() (init=False: a dataclasses.replace copy never shares it).
    _shared: SharedBase | None = field(default=None, init=False, repr=False)

    @contextlib.contextmanager
    def one_base(self) -> Iterator[SharedBase]:
        """Within the block, the states share one base model, loaded on first use and released at the end
        (so it is never held beside a timed run)."""
        self._shared = SharedBase(self._base_model)
        try:
            yield self._shared
        finally:
            self._shared.release()
            self._shared = None

    def logits(self, state: AdapterState):
        key = state.key
        if key not in self._logits:
            import torch

            # no_grad here, not process-wide: the caller's grad mode is the caller's
            with self._model_of(state) as model, torch.no_grad():
                self._logits[key] = model(**self.inputs.as_kwargs()).logits.float().cpu()
                if self.workload.kind == "generate":
                    out = model.generate(
                        **self.inputs.as_kwargs(),
                        **generate_kwargs(self.workload, model.config.pad_token_id, logits=True),
                    )
                    self._tokens[key] = out.sequences[:, self.inputs.input_ids.shape[1] :].cpu()
                    self._gen_logits[key] = torch.stack([step.float().cpu() for step in out.logits])
        return self._logits[key]

    @contextlib.contextmanager
    def _model_of(self, state: AdapterState) -> Iterator[Any]:
        """A model holding `state` for the block: fresh, or the shared base with the state applied (a cast
        copy of it where the case dtype or device differs from the fp32 CPU merge) and undone after."""
        if self._shared is None:
            yield self.build(state)
            return
        _refuse_unverifiable(state)
        base = self._shared.take()
        edits = self._shared.edits()
        try:
            self._apply(base, state, edits)
            yield self._finish(copy.deepcopy(base)) if self._casts() else base
        finally:
            self._shared.give_back(edits)

    def tokens(self, state: AdapterState):
        self.logits(state)
        return self._tokens[state.key]

    def check(self, state: AdapterState, library_logits) -> OracleAgreement:
        """The library reference's logits for `state` against this oracle's."""
        return compare_oracles(library_logits, self.logits(state), self.precision)

    def check_generate(self, state: AdapterState, library_tokens, library_step_logits) -> OracleAgreement:
        """generate: the library reference's greedy tokens and per-step logits against this oracle's. The
        prefill logits alone miss a bug on the decode steps (single-token inputs) that both peft models share."""
        self.logits(state)
        step = compare_oracles(library_step_logits, self._gen_logits[state.key], self.precision)
        mine = self._tokens[state.key]
        lib = library_tokens.cpu()
        differ = int((lib != mine).sum()) if lib.shape == mine.shape else int(mine.numel())
        rule = f"generate: {step.rule}; greedy tokens equal"
        if differ:
            return dataclasses.replace(
                step, agree=False, rule=rule + f" (they differ in {differ} of {mine.numel()})"
            )
        return dataclasses.replace(step, rule=rule)

    def build(self, state: AdapterState):
        """A fresh plain transformers model whose weights (or hooks) hold exactly `state`."""
        _refuse_unverifiable(state)
        model = self._load()
        self._apply(model, state, Edits(record=False))
        return self._finish(model)

    def _load_kwargs(self) -> dict[str, Any]:
        import torch

        if self.precision in QUANTIZED:
            return load_kwargs(self.precision, self.device, self.quant)
        return {"dtype": torch.float32}  # merged in fp32, cast by _finish

    def _load(self):
        model = _from_pretrained(
            self.model_location, self._load_kwargs(), self.trust_remote_code, self.allow_pickle
        )
        self.fresh_loads += 1
        return model

    def plain_base(self):
        """A fresh plain base in the case's dtype and device, nothing applied (oracle_rows.each_alone)."""
        return self._finish(self._load())

    def _base_model(self):
        """A shared base: finished now where _finish would not change it (and settled), else cast per state."""
        if self._casts():  # copied and cast per state (_model_of)
            return self._load()
        return settled(self._finish(self._load()), self.precision, self.device, self.inputs)

    def _casts(self) -> bool:
        """Whether _finish changes the loaded model's dtype or device (a shared base is then copied per state)."""
        return self.precision not in QUANTIZED and (self.precision != "fp32" or self.device != "cpu")

    def _apply(self, model, state: AdapterState, edits: Edits) -> None:
        import torch

        modules = dict(model.named_modules())
        loaded = [s for s in state.effective if not s.added]  # an added slot's B = 0: no delta
        adapters = [self.adapter(s.adapter, modules) for s in loaded]
        quantized = self.precision in QUANTIZED
        if why := dora_conflict(adapters, quantized=quantized):
            raise MathOracleError(why)
        with torch.no_grad():
            # A LoRA on a tied lm_head / embed_tokens moves that layer alone.
            untie_targets(modules, adapters, edits)
            _replace_saved_copies(modules, adapters, [s.name for s in loaded], edits)
            if quantized:
                _hook_deltas(modules, adapters, edits)
            else:
                _merge_deltas(modules, adapters, edits)

    def _finish(self, model):
        """The case's dtype and device, eval mode, no gradients."""
        import torch

        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        with torch.no_grad():
            if self.precision not in QUANTIZED:
                model.to(dtypes[self.precision])
            if "device_map" not in self._load_kwargs():
                model.to(self.device)
        model.eval()
        model.requires_grad_(False)
        return model

    def adapter(self, key: str, modules: dict[str, Any]) -> AdapterWeights:
        if key not in self._adapters:
            self._adapters[key] = read_any_adapter(self.adapter_locations[key], modules)
        return self._adapters[key]


def _refuse_unverifiable(state: AdapterState) -> None:
    if not state.verifiable:
        raise MathOracleError(
            f"state {state.description!r} holds trained weights no adapter file has; nothing to compute from"
        )


def _from_pretrained(location: str, kwargs: dict[str, Any], trust_remote_code: bool, allow_pickle: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        location,
        trust_remote_code=trust_remote_code,
        use_safetensors=None if allow_pickle else True,
        **kwargs,
    )
    model.requires_grad_(False)
    return model


def lora_delta(weight, lora, *, transposed: bool, scratch: dict | None = None):
    """scaling * B @ A in fp32 (scaled in place), laid out like `weight` (transposed for Conv1D).
    `scratch`: buffers by shape, reused for the next delta of that shape (each is consumed before the next)."""
    import torch

    b, a = lora.B, lora.A
    if scratch is None or b.dtype != a.dtype:
        delta = b @ a
    else:
        # A new weight-sized buffer per module is mostly page faults: one per shape takes the 135M shape's
        # merge from about 0.47 to 0.33 s an adapter (one thread), with the same bits (the same matmul).
        key = (b.shape[0], a.shape[1], b.dtype, b.device)
        if key not in scratch:
            scratch[key] = torch.empty(key[:2], dtype=b.dtype, device=b.device)
        delta = torch.mm(b, a, out=scratch[key])
    delta = delta.mul_(lora.scaling)
    return delta.T if transposed else delta


def is_quantized(module) -> bool:
    """A bitsandbytes layer: its weight holds packed 4-bit or int8 values a delta cannot be added to."""
    return type(module.weight).__name__ in ("Params4bit", "Int8Params")


def _merge_deltas(modules: dict[str, Any], adapters: list[AdapterWeights], edits: Edits) -> None:
    merge_param_deltas(modules, adapters, edits)  # target_parameters: plain Parameters, never quantized
    merge_embedding_deltas(modules, adapters, lora_delta, edits)
    scratch: dict = {}  # each delta is added before the next is computed
    for adapter in adapters:
        for v in adapter.ia3:
            if not is_quantized(modules[v.module]):
                merge_ia3(modules[v.module], v, edits)
        for lora in adapter.lora:
            module = modules[lora.module]
            if is_quantized(module):
                continue  # _hook_deltas handles it
            # The layer's own layout decides: peft turns fan_in_fan_out off on an nn.Linear (and on for a
            # Conv1D), with a warning, whatever the saved config says.
            transposed = is_conv1d(module)
            weight = edits.keep(module.weight)
            if lora.magnitude is not None:
                weight.copy_(dora_weight(weight, lora, transposed=transposed).to(weight.dtype))
                continue
            delta = lora_delta(weight, lora, transposed=transposed, scratch=scratch)
            if weight.dtype == delta.dtype:  # fp32: in place, the same sum as W + delta, two buffers fewer
                weight.add_(delta)
            else:
                weight.copy_((weight.float() + delta).to(weight.dtype))


def _hook_deltas(modules: dict[str, Any], adapters: list[AdapterWeights], edits: Edits) -> None:
    """Quantized base layers: out += scaling * (x @ A.T) @ B.T per active adapter, in fp32. Layers the
    quantizer left in floating point (GPT-2's Conv1D, a skipped module) are merged as usual."""
    _merge_deltas(modules, adapters, edits)
    per_module: dict[str, list[Any]] = {}
    for adapter in adapters:
        for lora in adapter.lora:
            if is_quantized(modules[lora.module]):
                per_module.setdefault(lora.module, []).append(lora)
    for adapter in adapters:
        for v in adapter.ia3:
            module = modules[v.module]
            if not is_quantized(module):
                continue
            vec = v.vector.flatten()
            if v.feedforward:  # the layer's input is rescaled: a pre-hook

                def pre(mod, args, vec=vec):
                    x = args[0]
                    return ((x.float() * vec.to(x.device)).to(x.dtype), *args[1:])

                edits.hook(module.register_forward_pre_hook(pre))
            else:

                def post(mod, args, out, vec=vec):
                    return (out.float() * vec.to(out.device)).to(out.dtype)

                edits.hook(module.register_forward_hook(post))
    for name, loras in per_module.items():
        module = modules[name]

        def hook(mod, args, out, loras=loras):
            x = args[0].float()
            extra = sum(lo.scaling * ((x @ lo.A.to(x.device).T) @ lo.B.to(x.device).T) for lo in loras)
            return (out.float() + extra).to(out.dtype)

        edits.hook(module.register_forward_hook(hook))


def _replace_saved_copies(
    modules: dict[str, Any], adapters: list[AdapterWeights], names: list[str], edits: Edits
) -> None:
    import torch

    owners: dict[str, str] = {}
    for adapter, slot_name in zip(adapters, names, strict=True):
        for module_name, params in adapter.saved_copies:
            if module_name in owners:
                raise MathOracleError(
                    f"adapters {owners[module_name]!r} and {slot_name!r} both replace {module_name!r} "
                    "(modules_to_save); only one can be active for it"
                )
            owners[module_name] = slot_name
            module = modules[module_name]
            for param_name, value in params:
                old = getattr(module, param_name)
                if tuple(old.shape) != tuple(value.shape):
                    raise MathOracleError(
                        f"{adapter.location}: saved copy {module_name}.{param_name} has shape "
                        f"{tuple(value.shape)}, the base model's is {tuple(old.shape)}"
                    )
                # A new Parameter: a head tied to the input embeddings must not take the embeddings along.
                new = torch.nn.Parameter(value.to(old.dtype).to(old.device).clone(), requires_grad=False)
                edits.replace(module, param_name, new)


# Agreement between the two oracles ---------------------------------------------------------------------


# Measured on CPU (torch 2.13, transformers 5.23, peft 0.21.2) over the seven agreement cases of
# tests/engine/test_math_oracle.py (tiny-llama and tiny-gpt2; rank + alpha patterns, rslora, two adapters, an added slot,
# modules_to_save): max |library - math| / max(1, max |math|) was
#   fp32 2.0e-7 .. 5.9e-7 (a few fp32 ulps: the merged weight rounds W + s*B@A once, the library rounds W@x and
#        s*B@(A@x) separately);  bound 1e-5, a 17x margin;
#   bf16 3.8e-3 .. 9.6e-3 with one adapter, 2.5e-2 with two active (scenarios/multi_adapter.toml, step 7);
#        fp16 5.1e-4 .. 1.1e-3 (the merged weight is rounded to the half dtype, the library keeps the LoRA
#        path in fp32);  bounds 4e-2 and 4e-3, 1.6x and 3.6x margins;
#   int8 5.9e-3 .. 1.3e-2, nf4 3.8e-3 .. 1.2e-2, fp4 4.3e-3 .. 9.6e-3 (bf16 compute; the hook adds the same
#        fp32 LoRA output, only the order of the casts differs);  bound 3e-2, a 2.3x margin.
# Larger adapters amplify the rounding: an init_std 0.3 adapter on q, k and v measured 0.15 in bf16 (attention
# sharpens with the q/k deltas), so hotswap_targets uses 0.1. The smallest adapter effect in those cases,
# max |adapter - base| / scale, is 0.12: every bound stays at least 3x below what an adapter moves, so a dropped or mis-scaled module cannot hide inside it (the negative controls
# in the tests: alpha_pattern ignored, rslora ignored, a missing transpose, one adapter of two).
# Command: PYTHONPATH=$PWD python -m pytest -s tests/engine/test_math_oracle.py -k agreement (prints each figure).
ORACLE_RTOL: dict[str, float] = {
    "fp32": 1e-5,
    # Two active adapters add their roundings: multi_adapter's bf16 set_adapter([second, third]) measured 2.5e-2.
    "bf16": 4e-2,
    "fp16": 4e-3,
    "int8": 3e-2,
    "nf4": 3e-2,
    "fp4": 3e-2,
}


def compare_oracles(library_logits, math_logits, precision: str) -> OracleAgreement:
    """Whether the library's reference and the math oracle agree: a pure function of two logit tensors."""
    import torch

    rtol = ORACLE_RTOL[precision]
    rule = f"max|library - math| <= {rtol:g} * max(1, max|math|) ({precision})"
    lib = library_logits.float().cpu()
    math_ = math_logits.float().cpu()
    if lib.shape != math_.shape:
        return OracleAgreement(
            False, None, None, None, rtol, rule + f"; shapes differ {lib.shape} {math_.shape}"
        )
    if not (bool(torch.isfinite(lib).all()) and bool(torch.isfinite(math_).all())):
        return OracleAgreement(False, None, None, None, rtol, rule + "; non-finite logits")
    diff = float((lib - math_).abs().max())
    scale = max(1.0, float(math_.abs().max()))
    bound = rtol * scale
    return OracleAgreement(diff <= bound, diff, scale, bound, rtol, rule)
