"""References: the eager output of a freshly loaded model that holds exactly the expected adapter state.

One fresh model per distinct state (cached by AdapterState.key), loaded in the case's precision, adapters
applied with the plainest API (load_adapter / add_adapter, then set_adapter), never compiled, never swapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.ops.state import AdapterState
from bench.precision import ADAPTER_EFFECT_FACTOR, Tolerance
from bench.records import AdapterEffect, OutputCheck
from bench.scenario.schema import Workload
from bench.worker.model import Inputs, generate_kwargs, load_model


@dataclass
class ReferenceOracle:
    model_location: str
    precision: str
    device: str
    inputs: Inputs
    workload: Workload
    adapter_locations: dict[str, str]
    adapter_configs: dict[str, Any]  # key -> LoraConfig for add_adapter
    tolerance: Tolerance
    quant: Any = None
    trust_remote_code: bool = False  # as the model under test: off unless the scenario or the CLI opts in
    allow_pickle: bool = False
    _logits: dict[str, Any] = field(default_factory=dict)
    _tokens: dict[str, Any] = field(default_factory=dict)
    fresh_loads: int = 0

    def _fresh(self, state: AdapterState):
        import torch

        model = load_model(
            self.model_location,
            self.precision,
            self.device,
            quant=self.quant,
            trust_remote_code=self.trust_remote_code,
            allow_pickle=self.allow_pickle,
        )
        self.fresh_loads += 1
        effective = state.effective
        for slot in effective:
            if slot.added:
                # add_adapter's default LoRA init has B = 0: the output is the base output whatever A holds.
                with torch.random.fork_rng(devices=[]):
                    model.add_adapter(self.adapter_configs[slot.adapter], adapter_name=slot.name)
            else:
                model.load_adapter(self.adapter_locations[slot.adapter], adapter_name=slot.name)
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
                self._tokens[key] = self._generate(model)
            del model
        return self._logits[key]

    def tokens(self, state: AdapterState):
        self.logits(state)
        return self._tokens[state.key]

    def _generate(self, model):
        out = model.generate(
            **self.inputs.as_kwargs(), **generate_kwargs(self.workload, model.config.pad_token_id)
        )
        return out[:, self.inputs.input_ids.shape[1] :].cpu()

    def check_logits(self, state: AdapterState, actual) -> OutputCheck:
        return compare_logits(actual, self.logits(state), self.tolerance, state.description)

    def check_tokens(self, state: AdapterState, actual_tokens) -> OutputCheck:
        ref = self.tokens(state)
        actual_tokens = actual_tokens.cpu()
        equal = actual_tokens.shape == ref.shape and bool((actual_tokens == ref).all())
        mismatched = (
            int((actual_tokens != ref).sum()) if actual_tokens.shape == ref.shape else int(ref.numel())
        )
        return OutputCheck(
            reference_state=state.description,
            kind="tokens",
            max_abs_diff=None,
            max_rel_diff=None,
            atol=self.tolerance.atol,
            rtol=self.tolerance.rtol,
            matches=equal,
            tokens_equal=equal,
            mismatched_tokens=mismatched,
        )

    def effect(self, adapter_key: str, slot_name: str) -> AdapterEffect:
        """How much one adapter, alone and loaded from its files, moves the output away from the base."""
        from bench.ops.state import Slot

        alone = AdapterState(slots=(Slot(slot_name, adapter_key, False),), active=(slot_name,))
        diff = (self.logits(alone) - self.logits(AdapterState())).abs().max().item()
        threshold = ADAPTER_EFFECT_FACTOR * self.tolerance.atol
        return AdapterEffect(
            adapter=adapter_key, max_abs_effect=diff, threshold=threshold, measurable=diff > threshold
        )


def compare_logits(actual, reference, tol: Tolerance, state_description: str) -> OutputCheck:
    import torch

    actual = actual.float().cpu()
    if actual.shape != reference.shape:
        return OutputCheck(
            reference_state=state_description,
            kind="logits",
            max_abs_diff=None,
            max_rel_diff=None,
            atol=tol.atol,
            rtol=tol.rtol,
            matches=False,
        )
    diff = (actual - reference).abs()
    rel = diff / reference.abs().clamp_min(1e-6)
    finite = bool(torch.isfinite(actual).all())
    matches = finite and bool((diff <= tol.atol + tol.rtol * reference.abs()).all())
    return OutputCheck(
        reference_state=state_description,
        kind="logits",
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(rel.max()),
        atol=tol.atol,
        rtol=tol.rtol,
        matches=matches,
    )
