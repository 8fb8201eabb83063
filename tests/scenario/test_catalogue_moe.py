"""The catalogue's mixture-of-experts scenarios (scenarios/moe_target_parameters*.toml) catch their class of bug.

Through run_case (the real run path): a peft hotswap planted to skip the parameter targets (the expert
Parameters keep the first adapter's LoRA weights; every module target would be swapped) fails the compiled
swap's output check; the same case unplanted keeps its shipped verdict, xfail on the recompile markers only,
with both oracles agreeing on every checked step. In the preparation scenario, peft's ParamWrapper planted to
give each expert the next expert's LoRA (subject and library reference alike) fails on the math oracle; the
unplanted cases keep their markers.
"""

from __future__ import annotations

from operator import attrgetter

import pytest
import torch

from bench.worker.execute import run_case
from tests.catalogue import failed_outcomes, shipped_case

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

FILE = "moe_target_parameters.toml"
PREPARE = "moe_target_parameters_prepare.toml"
CASE = "moe-target-parameters[fp32-aot_eager-peft]"
SWAP_STEP = 6


def _plant_swap_skips_parameter_targets(monkeypatch) -> None:
    """peft's hotswap leaves every ParamWrapper's LoRA weights as they were (a swap that knows only modules)."""
    import peft.utils.hotswap as peft_hotswap
    from peft.tuners.lora.layer import ParamWrapper

    original = peft_hotswap.hotswap_adapter_from_state_dict

    def planted(model, state_dict, adapter_name, config, *args, **kwargs):
        wrapped = {name for name, m in model.named_modules() if isinstance(m, ParamWrapper)}
        # the weights directly owned by a ParamWrapper: <wrapper>.lora_A.<name>.weight
        kept = [k for k in state_dict if k.split(".lora_")[0] in wrapped]
        old = {k: attrgetter(k)(model).detach().clone() for k in kept}
        out = original(model, state_dict, adapter_name, config, *args, **kwargs)
        with torch.no_grad():
            for key, value in old.items():
                attrgetter(key)(model).copy_(value)
        return out

    monkeypatch.setattr(peft_hotswap, "hotswap_adapter_from_state_dict", planted)


def test_a_swap_that_skips_parameter_targets_fails(cache_root, monkeypatch):
    _plant_swap_skips_parameter_targets(monkeypatch)
    r = run_case(shipped_case(FILE, CASE), cache_root)
    assert r.verdict == "fail", (r.verdict, r.reason)
    assert (SWAP_STEP, "matches_reference") in failed_outcomes(r), failed_outcomes(r)


def test_unplanted_the_case_keeps_its_shipped_verdict(cache_root):
    r = run_case(shipped_case(FILE, CASE), cache_root)
    assert r.verdict == "xfail", (r.verdict, r.reason)
    assert failed_outcomes(r) == []
    xfailed = [
        (i, o.expectation) for i, s in enumerate(r.steps, 1) for o in s.outcomes if o.status == "xfail"
    ]
    assert xfailed == [(SWAP_STEP, "recompiles"), (SWAP_STEP + 1, "recompiles")]
    checked = [s for s in r.steps if s.oracle_agreement is not None]
    assert len(checked) == 6 and all(s.oracle_agreement.agree for s in checked)
    assert all(s.unverified is None for s in r.steps)


def _plant_experts_rolled(monkeypatch) -> None:
    """peft's ParamWrapper applies expert e's LoRA factors to expert e + 1."""
    from peft.tuners.lora.layer import ParamWrapper

    original = ParamWrapper.get_delta_factors

    def planted(self, adapter_name):
        lhs, rhs, scaling = original(self, adapter_name)
        return lhs.roll(1, dims=0), rhs.roll(1, dims=0), scaling

    monkeypatch.setattr(ParamWrapper, "get_delta_factors", planted)


def test_a_library_bug_in_the_experts_fails_on_the_math(cache_root, monkeypatch):
    _plant_experts_rolled(monkeypatch)
    r = run_case(shipped_case(PREPARE, "moe-target-parameters-prepare[fp32-none-transformers]"), cache_root)
    assert r.verdict == "fail", (r.verdict, r.reason)
    assert (2, "oracles_agree") in failed_outcomes(r), failed_outcomes(r)


def test_unplanted_the_preparation_cases_keep_their_markers(cache_root):
    for path, xfailed in (
        ("peft", [(2, "succeeds")]),
        (
            "transformers",
            [
                (3, "matches_reference"),
                (3, "swap_in_place"),
                (4, "matches_reference"),
                (4, "steady_state_matches"),
            ],
        ),
    ):
        r = run_case(shipped_case(PREPARE, f"moe-target-parameters-prepare[fp32-none-{path}]"), cache_root)
        assert r.verdict == "xfail", (path, r.verdict, r.reason)
        assert failed_outcomes(r) == []
        got = [
            (i, o.expectation) for i, s in enumerate(r.steps, 1) for o in s.outcomes if o.status == "xfail"
        ]
        assert sorted(got) == xfailed, (path, got)
