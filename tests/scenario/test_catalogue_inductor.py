"""The inductor catalogue scenario (scenarios/hotswap_inductor.toml) catches a swap its kernels would hide.

Inductor generates kernels that read the adapter's weights and scalings; a swap that leaves the old
scaling tensors in place must give wrong outputs there, and the scenario must say so. Planted in peft's
hotswap through the real run path (run_case); the same case unplanted passes. Inductor compiles for 25 to
70 s on a 2-core CPU the first time; both runs share the machine's inductor cache.
"""

from __future__ import annotations

import pytest
import torch

from bench.worker.execute import run_case
from tests.catalogue import shipped_case

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

CASE_ID = "hotswap-inductor[fp32-inductor-peft]"


def _case():
    return shipped_case("hotswap_inductor.toml", CASE_ID)


def _plant_stale_scaling(monkeypatch) -> None:
    """peft's hotswap swaps the weights and keeps the old adapter's scaling tensors (alpha 16/8 stays 2)."""
    import peft.utils.hotswap as peft_hotswap
    from peft.tuners.lora.layer import LoraLayer

    original = peft_hotswap.hotswap_adapter_from_state_dict

    def planted(model, state_dict, adapter_name, config, *args, **kwargs):
        layers = [m for m in model.modules() if isinstance(m, LoraLayer) and adapter_name in m.scaling]
        old = [m.scaling[adapter_name] for m in layers]
        old = [s.clone() if isinstance(s, torch.Tensor) else s for s in old]
        out = original(model, state_dict, adapter_name, config, *args, **kwargs)
        with torch.no_grad():
            for module, scaling in zip(layers, old, strict=True):
                if isinstance(scaling, torch.Tensor):
                    module.scaling[adapter_name].copy_(scaling)
                else:
                    module.scaling[adapter_name] = scaling
        return out

    monkeypatch.setattr(peft_hotswap, "hotswap_adapter_from_state_dict", planted)


@pytest.mark.slow
def test_a_stale_scaling_under_inductor_fails_and_the_unplanted_case_passes(cache_root, monkeypatch):
    control = run_case(_case(), cache_root)
    assert control.verdict == "pass", control.reason
    swap = next(s for s in control.steps if s.args.get("hotswap"))
    assert swap.compile.recompiles == 0

    _plant_stale_scaling(monkeypatch)
    planted = run_case(_case(), cache_root)
    assert planted.verdict == "fail", planted.reason
    failed = {(s.index, o.expectation) for s in planted.steps for o in s.outcomes if o.status == "fail"}
    assert (5, "matches_reference") in failed, planted.reason
