"""References: the eager output of a freshly loaded model that holds exactly the expected adapter state.

One fresh model per distinct state (cached by AdapterState.key), loaded in the case's precision, adapters
applied with the plainest API (load_adapter / add_adapter, then set_adapter), never compiled, never swapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.engine.hotswap import prepare
from bench.engine.model import Inputs, generate_kwargs, load_model
from bench.results.measures import OutputCheck, StateContrast
from bench.spec.precision import DISTINGUISH_FACTOR, Tolerance, tolerance_for
from bench.spec.schema import Workload
from bench.spec.state import AdapterState


@dataclass
class ReferenceOracle:
    model_location: str
    precision: str
    device: str
    inputs: Inputs
    workload: Workload
    adapter_locations: dict[str, str]
    adapter_configs: dict[str, Any]  # key -> LoraConfig for add_adapter
    quant: Any = None
    trust_remote_code: bool = False  # as the model under test: off unless the scenario or the CLI opts in
    allow_pickle: bool = False
    # The subject's LoRA layers are zero-padded to this rank (the peft hotswap path): pad the reference alike.
    pad_rank: int | None = None
    _logits: dict[str, Any] = field(default_factory=dict)
    _tokens: dict[str, Any] = field(default_factory=dict)
    _gen_logits: dict[str, Any] = field(default_factory=dict)  # generate's per-step logits [steps, B, V]
    fresh_loads: int = 0

    def fresh_base(self):
        """The base model loaded afresh, as the case loads it, with no adapter (every reference starts here)."""
        self.fresh_loads += 1
        return load_model(
            self.model_location,
            self.precision,
            self.device,
            quant=self.quant,
            trust_remote_code=self.trust_remote_code,
            allow_pickle=self.allow_pickle,
        )

    def _fresh(self, state: AdapterState):
        import torch

        model = self.fresh_base()
        effective = state.effective
        for slot in effective:
            if slot.added:
                # add_adapter's default LoRA init has B = 0: the output is the base output whatever A holds.
                with torch.random.fork_rng(devices=[]):
                    model.add_adapter(self.adapter_configs[slot.adapter], adapter_name=slot.name)
            else:
                model.load_adapter(self.adapter_locations[slot.adapter], adapter_name=slot.name)
        if self.pad_rank is not None and any(not s.added for s in effective):
            prepare(model, self.pad_rank)  # the subject's code path: same padding, same summation order
        if len(effective) > 1:
            model.set_adapter([s.name for s in effective])
        elif effective:
            model.set_adapter(effective[0].name)
        model.requires_grad_(False)
        return model

    def logits(self, state: AdapterState):
        key = state.key
        if key not in self._logits:
            model = self._fresh(state)
            self._logits[key] = model(**self.inputs.as_kwargs()).logits.float().cpu()
            if self.workload.kind == "generate":
                self._tokens[key], self._gen_logits[key] = generated(self._generate(model), self.inputs)
            del model
        return self._logits[key]

    def tokens(self, state: AdapterState):
        self.logits(state)
        return self._tokens[state.key]

    def generated_outputs(self, state: AdapterState):
        """generate's greedy tokens and per-step logits [steps, B, V] for `state`."""
        self.logits(state)
        return self._tokens[state.key], self._gen_logits[state.key]

    def _generate(self, model):
        return model.generate(
            **self.inputs.as_kwargs(),
            **generate_kwargs(self.workload, model.config.pad_token_id, logits=True),
        )

    def tolerance(self, reference, backend: str, state: AdapterState | None = None) -> Tolerance:
        """The rule for a call that ran on `backend` in `state` (bench.spec.precision.tolerance_for), scaled to
        `reference`."""
        rounded = state is not None and state.base_rounded
        return tolerance_for(
            self.precision,
            backend,
            self.device,
            float(reference.abs().max()),
            self.quant,
            base_rounded=rounded,
        )

    def check_logits(self, state: AdapterState, actual, backend: str) -> OutputCheck:
        ref = self.logits(state)
        return compare_logits(actual, ref, self.tolerance(ref, backend, state), state.description)

    def check_tokens(self, state: AdapterState, actual, backend: str) -> OutputCheck:
        """Greedy tokens must be equal AND generate's per-step logits must match: a stale swap that keeps
        every argmax passes a token check alone."""
        actual_tokens, actual_logits = actual
        self.logits(state)
        ref, ref_logits = self._tokens[state.key], self._gen_logits[state.key]
        actual_tokens = actual_tokens.cpu()
        equal = actual_tokens.shape == ref.shape and bool((actual_tokens == ref).all())
        mismatched = (
            int((actual_tokens != ref).sum()) if actual_tokens.shape == ref.shape else int(ref.numel())
        )
        logits = compare_logits(actual_logits, ref_logits, self.tolerance(ref_logits, backend, state), "")
        return OutputCheck(
            reference_state=state.description,
            kind="tokens",
            max_abs_diff=logits.max_abs_diff,
            max_rel_diff=logits.max_rel_diff,
            atol=logits.atol,
            rtol=logits.rtol,
            matches=equal and logits.matches,
            tokens_equal=equal,
            mismatched_tokens=mismatched,
            rule=logits.rule,
            rule_reason=logits.rule_reason,
        )

    def contrast(self, previous: AdapterState, new: AdapterState, backend: str) -> StateContrast:
        """How far apart the references of two states are, in units of the step's own tolerance."""
        new_ref, old_ref = self.logits(new), self.logits(previous)
        tol = self.tolerance(new_ref, backend, new)
        diff = (new_ref - old_ref).abs()
        margin = float((diff / (tol.atol + tol.rtol * new_ref.abs())).max())
        return StateContrast(
            previous_state=previous.description,
            max_abs_diff=float(diff.max()),
            margin=margin,
            factor=DISTINGUISH_FACTOR,
            distinguishable=margin > DISTINGUISH_FACTOR,
            rule=tol.rule,
        )


def generated(out, inputs: Inputs):
    """generate's dict output (return_dict_in_generate, output_logits) as (new tokens, logits [steps, B, V])."""
    import torch

    tokens = out.sequences[:, inputs.input_ids.shape[1] :].cpu()
    return tokens, torch.stack([step.float().cpu() for step in out.logits])


def compare_logits(actual, reference, tol: Tolerance, state_description: str) -> OutputCheck:
    import torch

    actual = actual.float().cpu()
    rule = {"atol": tol.atol, "rtol": tol.rtol, "rule": tol.rule, "rule_reason": tol.reason}
    if actual.shape != reference.shape:
        return OutputCheck(
            reference_state=state_description,
            kind="logits",
            max_abs_diff=None,
            max_rel_diff=None,
            matches=False,
            **rule,
        )
    diff = (actual - reference).abs()
    rel = diff / reference.abs().clamp_min(1e-6)
    # A non-finite value on either side matches nothing: an infinite reference logit would otherwise widen
    # its own bound (rtol x inf) to accept any output, and NaN compares false only by accident.
    finite = bool(torch.isfinite(actual).all()) and bool(torch.isfinite(reference).all())
    matches = finite and bool((diff <= tol.atol + tol.rtol * reference.abs()).all())
    return OutputCheck(
        reference_state=state_description,
        kind="logits",
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(rel.max()),
        matches=matches,
        **rule,
    )
