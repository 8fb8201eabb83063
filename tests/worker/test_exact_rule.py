"""The exact rule compares the same computation (docs/verdicts.md, "Exact where exact is possible").

On the peft hotswap path, enable_hotswap zero-pads every LoRA layer to target_rank (peft's
prepare_model_for_compiled_hotswap). A reference loaded without that padding sums in another order: a few ulps
apart, which on some CPUs exceeded the exact bound (1.1e-6 against 9.5e-7, a false fail of a correct library).
The reference is now padded like the subject, so a correct padded swap is bitwise equal, and a planted
1e-5 relative error in the swapped weights still fails.
"""

from __future__ import annotations

import pytest
import torch

from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from bench.worker.prepare import padded_rank
from tests.conftest import scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

QV = ["q_proj", "v_proj"]


def _padded(path: str) -> str:
    """Two rank-4 adapters, the second hotswapped into a slot padded to rank 12, compiled."""
    return scenario_toml(
        "padded",
        [
            {"op": "enable_hotswap", "target_rank": 12},
            {"op": "load_adapter", "adapter": "r4", "name": "default"},
            "compile",
            "forward",
            {"op": "load_adapter", "adapter": "r4b", "name": "default", "hotswap": True},
            "forward",
        ],
        scenario={"hotswap_path": path},
        matrix={"compile": ["aot_eager"]},
        timing={"warmup": 1, "min_rounds": 3, "min_time_s": 0},
        adapters={
            "r4": {"rank": 4, "alpha": 8, "targets": QV, "seed": 1},
            "r4b": {"rank": 4, "alpha": 16, "targets": QV, "seed": 2},
        },
    )


def _case(write_scenario, path="peft"):
    (case,) = expand(load_scenario(write_scenario(_padded(path))))
    return case


def test_the_reference_is_padded_only_where_the_subject_is(write_scenario):
    assert padded_rank(_case(write_scenario, "peft")) == 12
    assert padded_rank(_case(write_scenario, "transformers")) is None  # it stores the rank and never pads


def test_a_correct_padded_swap_is_bitwise_equal_to_its_reference(cache_root, write_scenario):
    r = run_case(_case(write_scenario), cache_root)
    assert r.verdict == "pass", r.reason
    checked = [s.output for s in r.steps if s.output is not None]
    assert len(checked) == 4 and all(o.rule == "exact" and o.max_abs_diff == 0.0 for o in checked)


@pytest.mark.parametrize("error", [1e-5])
def test_a_planted_small_relative_error_in_the_padded_swap_fails(
    cache_root, write_scenario, monkeypatch, error
):
    import peft.utils.hotswap as peft_hotswap

    original = peft_hotswap.hotswap_adapter_from_state_dict

    def planted(model, *args, **kwargs):
        out = original(model, *args, **kwargs)
        with torch.no_grad():
            for module in model.modules():
                for layer in getattr(module, "lora_B", {}).values():
                    layer.weight.mul_(1 + error)  # in place: a swap that is only slightly wrong
        return out

    monkeypatch.setattr(peft_hotswap, "hotswap_adapter_from_state_dict", planted)
    r = run_case(_case(write_scenario), cache_root)
    swap = r.steps[4]
    assert swap.output.max_abs_diff > 0 and not swap.output.matches, swap.output
    assert r.verdict == "fail" and r.reason.startswith("step 5 (load_adapter): matches_reference")
