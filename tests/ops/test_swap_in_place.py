"""A hotswap keeps its promise (docs/verdicts.md, "A hotswap swaps in place"): the slot's LoRA weights are the same
objects, on the same storage, after the swap, on both paths. A swap that rebinds new Parameters gives right
eager outputs and no recompile on CPU, and leaves a CUDA graph replaying the old weights, so only this check
sees it. Planted in the libraries, through run_case on the shipped scenario, with the unplanted control."""

from __future__ import annotations

import pytest
import torch

from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.conftest import SCENARIOS

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

ALPHA = SCENARIOS / "hotswap_alpha.toml"


def _case(path_name: str):
    return next(
        c for c in expand(load_scenario(ALPHA)) if c.id == f"hotswap-alpha[fp32-aot_eager-{path_name}]"
    )


def _rebind_lora_b(model) -> None:
    """The planted bug: every swapped lora_B becomes a new Parameter holding the same values."""
    with torch.no_grad():
        for module in model.modules():
            for layer in getattr(module, "lora_B", {}).values():
                layer.weight = torch.nn.Parameter(layer.weight.detach().clone(), requires_grad=False)


def _plant(monkeypatch, path_name: str) -> None:
    if path_name == "peft":
        import peft.utils.hotswap as peft_hotswap

        original = peft_hotswap.hotswap_adapter_from_state_dict

        def planted(model, *args, **kwargs):
            out = original(model, *args, **kwargs)
            _rebind_lora_b(model)
            return out

        monkeypatch.setattr(peft_hotswap, "hotswap_adapter_from_state_dict", planted)
    else:
        from transformers.integrations.peft import PeftAdapterMixin

        original = PeftAdapterMixin.load_adapter

        def planted(self, *args, hotswap=False, **kwargs):
            out = original(self, *args, hotswap=hotswap, **kwargs)
            if hotswap is True:
                _rebind_lora_b(self)
            return out

        monkeypatch.setattr(PeftAdapterMixin, "load_adapter", planted)


def _swap_outcome(result):
    return next(o for o in result.steps[4].outcomes if o.expectation == "swap_in_place")


def test_a_peft_swap_that_rebinds_its_parameters_fails(cache_root, monkeypatch):
    _plant(monkeypatch, "peft")
    r = run_case(_case("peft"), cache_root)
    o = _swap_outcome(r)
    assert o.status == "fail" and "rebound 4 of 8 LoRA weights (4 new object)" in o.message, o.message
    assert "lora_B (new object)" in o.message and "lora_A (" not in o.message  # only what was planted
    assert r.verdict == "fail"


def test_the_real_peft_swap_keeps_its_parameters(cache_root):
    o = _swap_outcome(run_case(_case("peft"), cache_root))
    assert o.status == "pass" and o.held, o.message
    assert o.actual == "8 of 8 kept"


def test_the_transformers_swap_rebinds_every_weight_and_is_the_known_failure(cache_root):
    """A finding on transformers 5.23: load_adapter(hotswap=True) puts the new weights into new Parameters.
    The shipped marker's fingerprint is "(new object)" for all 8 weights."""
    o = _swap_outcome(run_case(_case("transformers"), cache_root))
    assert (
        o.status == "xfail"
        and "fingerprint: message ~ /\\(8 new object\\)/, value in [8, 8]" in o.known_failure
    )


def test_a_transformers_swap_that_also_drops_parameters_is_not_the_known_failure(cache_root, monkeypatch):
    """lora_B turned into plain tensors: still rebound, but not the known bug's signature."""
    from transformers.integrations.peft import PeftAdapterMixin

    original = PeftAdapterMixin.load_adapter

    def planted(self, *args, hotswap=False, **kwargs):
        out = original(self, *args, hotswap=hotswap, **kwargs)
        if hotswap is True:
            for module in self.modules():
                for layer in getattr(module, "lora_B", {}).values():
                    w = layer.weight.detach().clone()
                    del layer.weight
                    layer.weight = w
        return out

    monkeypatch.setattr(PeftAdapterMixin, "load_adapter", planted)
    o = _swap_outcome(run_case(_case("transformers"), cache_root))
    assert o.status == "fail" and "signature does not match" in o.message, o.message
