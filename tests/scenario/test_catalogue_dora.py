"""The DoRA catalogue scenarios (scenarios/dora.toml, eager; scenarios/dora_hotswap_compiled.toml, aot_eager)
catch their class of bug, and the spec field is checked.

Planted through run_case, as tests/scenario/test_catalogue.py does for the other classes:
- enable_adapters() brings the DoRA layers back without their magnitude (each becomes plain LoRA): the subject
  alone is wrong after the toggle, `matches_reference` fails on step 5 of the eager case;
- peft's DoRA layer ignores the magnitude (plain LoRA), in the subject and the library reference alike: only the
  math oracle sees it, and the oracles' difference leaves the known failure's band (the magnitude transformers
  does not load), so `oracles_agree` fails on the first load;
- peft's hotswap maps no magnitude key (the "swaps A and B but not the magnitude" bug the scenario's header
  rules out): on the compiled peft case it no longer raises, its missing-key rule zeroes the slot's magnitudes,
  and the swap's output is wrong (`matches_reference`, step 5);
Not caught, and why: a shared bug that moves the oracles' difference only a little stays inside the band.
Measured: peft's weight norm taken per input column instead of per output row (q_proj and v_proj are square)
gives 0.497 on step 2 against the shipped 0.508, inside [0.4, 0.62]; while transformers does not load the
magnitude, the math oracle's check of DoRA's own arithmetic is only as sharp as that band.
The unplanted case is the control: its shipped verdict (xfail) with no failed outcome.
"""

from __future__ import annotations

import pytest
import torch

from bench.errors import ScenarioError
from bench.ops.script_text import ReproUnsupported
from bench.report.repro import repro_script
from bench.scenario import load_scenario
from bench.worker.execute import run_case
from tests.catalogue import failed_outcomes, shipped_case
from tests.conftest import LOAD_A, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

TRANSFORMERS_CASE = ("dora.toml", "dora[fp32-none-transformers]")
PEFT_CASE = ("dora.toml", "dora[fp32-none-peft]")
COMPILED_PEFT_CASE = ("dora_hotswap_compiled.toml", "dora-hotswap-compiled[fp32-aot_eager-peft]")


def _plant_enable_drops_magnitude(monkeypatch) -> None:
    """enable_adapters() resets every DoRA magnitude to ||W + s B A||_row: DoRA becomes plain LoRA."""
    from peft.tuners.lora.layer import LoraLayer
    from transformers.integrations.peft import PeftAdapterMixin

    original = PeftAdapterMixin.enable_adapters

    def planted(self):
        original(self)
        with torch.no_grad():
            for module in self.modules():
                if not isinstance(module, LoraLayer):
                    continue
                for name, dora in module.lora_magnitude_vector.items():
                    delta = module.lora_B[name].weight @ module.lora_A[name].weight
                    merged = module.get_base_layer().weight + module.scaling[name] * delta
                    dora.weight.copy_(torch.linalg.vector_norm(merged, dim=1))

    monkeypatch.setattr(PeftAdapterMixin, "enable_adapters", planted)


def _plant_magnitude_ignored(monkeypatch) -> None:
    """peft's DoRA layer ignores the magnitude (m / ||W + s B A|| taken as 1): every DoRA adapter is plain LoRA,
    in the subject and the library reference alike."""
    from peft.tuners.lora.dora import DoraLinearLayer

    def planted(self, x, *, lora_A, lora_B, scaling, base_layer, base_result=None, adapter_name="default"):
        return lora_B(lora_A(x)) * scaling

    monkeypatch.setattr(DoraLinearLayer, "forward", planted)


def _plant_swap_drops_magnitude(monkeypatch) -> None:
    """peft's hotswap maps no magnitude key (no KeyError): its missing-key rule then zeroes the slot's magnitudes."""
    import peft.utils.hotswap as peft_hotswap

    original = peft_hotswap.hotswap_adapter_from_state_dict

    def planted(model, state_dict, adapter_name, config, *args, **kwargs):
        kept = {k: v for k, v in state_dict.items() if "lora_magnitude_vector" not in k}
        return original(model, kept, adapter_name, config, *args, **kwargs)

    monkeypatch.setattr(peft_hotswap, "hotswap_adapter_from_state_dict", planted)


PLANTED = {
    "toggle": (TRANSFORMERS_CASE, _plant_enable_drops_magnitude, (5, "matches_reference")),
    "ignored": (TRANSFORMERS_CASE, _plant_magnitude_ignored, (2, "oracles_agree")),
    "swap": (COMPILED_PEFT_CASE, _plant_swap_drops_magnitude, (5, "matches_reference")),
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_planted_dora_bug_fails_the_scenario(kind, cache_root, monkeypatch):
    which, plant, broken = PLANTED[kind]
    plant(monkeypatch)
    r = run_case(shipped_case(*which), cache_root)
    assert r.verdict == "fail", (r.verdict, r.reason)
    assert broken in failed_outcomes(r), failed_outcomes(r)


@pytest.mark.parametrize("which", [TRANSFORMERS_CASE, PEFT_CASE, COMPILED_PEFT_CASE], ids=lambda w: w[1])
def test_unplanted_the_case_keeps_its_shipped_verdict(which, cache_root):
    r = run_case(shipped_case(*which), cache_root)
    assert r.verdict == "xfail", (r.verdict, r.reason)
    assert failed_outcomes(r) == []


# ----- the spec field


def _adapters(write_scenario, adapter: dict):
    return load_scenario(
        write_scenario(scenario_toml("dora-spec", [LOAD_A, "forward"], adapters={"a": adapter}))
    )


def test_use_dora_is_read_and_shown_as_dora(write_scenario):
    (spec,) = _adapters(write_scenario, {"rank": 4, "use_dora": True}).adapters
    assert (spec.use_dora, spec.type, spec.method) == (True, "lora", "dora")
    (plain,) = _adapters(write_scenario, {"rank": 4}).adapters
    assert (plain.use_dora, plain.method) == (False, "lora")


def test_a_reproduction_script_is_refused_naming_dora():
    """The scripts build plain LoRA adapters: a DoRA spec (type "lora") must not be rebuilt as plain LoRA."""
    with pytest.raises(ReproUnsupported, match="not dora"):
        repro_script(None, None, shipped_case(*PEFT_CASE))  # refused before the result is read


@pytest.mark.parametrize(
    ("adapter", "why"),
    [
        ({"type": "ia3", "use_dora": True}, "DoRA is a LoRA variant"),
        ({"type": "adalora", "use_dora": True}, "DoRA is a LoRA variant"),
        ({"use_dora": "yes"}, "expected a boolean"),
        ({"use_dora": 1}, "expected a boolean"),
    ],
)
def test_a_bad_use_dora_names_file_and_field(write_scenario, adapter, why):
    with pytest.raises(ScenarioError) as info:
        _adapters(write_scenario, adapter)
    text = str(info.value)
    assert "adapters.a.use_dora" in text and why in text, text
    assert "dora-spec" in text or ".toml" in text, text
