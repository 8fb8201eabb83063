"""The output rules of docs/verdicts.md with their negative controls: the exact rule for eager-family
backends, distinguishability of every state change, and generate's logits beside its tokens."""

from __future__ import annotations

import pytest

from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.spec.precision import TOLERANCES, tolerance_for
from bench.worker.execute import run_case
from tests.conftest import SCENARIOS, scenario_toml

ADAPTER = {"rank": 8, "alpha": 16, "seed": 5, "init_std": 0.2}
LOAD_DEFAULT = {"op": "load_adapter", "adapter": "a", "name": "default"}
ONE_LOAD = scenario_toml("exact", [LOAD_DEFAULT], adapters={"a": ADAPTER})


def _case(path, **params):
    (case,) = [c for c in expand(load_scenario(path)) if all(c.params[k] == v for k, v in params.items())]
    return case


def _statuses(step):
    return {o.expectation: o.status for o in step.outcomes}


def _scale_lora_b(model, factor: float, *, first_only: bool):
    """Planted bug: the subject's LoRA B weights off by `factor` (one module, or all)."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(factor)
                if first_only:
                    return


def test_tolerance_rule_follows_precision_and_backend():
    exact = tolerance_for("fp32", "aot_eager", "cpu", 0.5)
    assert exact.rule == "exact" and exact.rtol == 0 and exact.atol == pytest.approx(8 * 2**-23)
    assert tolerance_for("bf16", "eager", "cpu", 3.0).atol == pytest.approx(2**-7 * 3.0)  # scaled to |ref|
    assert tolerance_for("nf4", "none", "cpu", 1.0).rule == "exact"  # same bnb kernels on the same CPU
    loose = tolerance_for("fp32", "inductor", "cpu", 2.0)
    assert loose.rule == "loose" and loose.atol == pytest.approx(TOLERANCES["fp32"].atol * 2.0)
    assert tolerance_for("nf4", "eager", "cuda", 1.0).rule == "loose"  # quantized kernels off CPU


def test_a_tiny_planted_error_passes_the_loose_rule_and_fails_the_exact_one(
    cache_root, write_scenario, monkeypatch
):
    """Negative control of the exact rule: one module's LoRA B off by 1e-4 relative. The old loose fp32 rule
    (atol 1e-4 + rtol 1e-4) lets it through; the exact rule (8 eps x max(1, max|ref|)) does not."""
    from bench.ops.adapters import LoadAdapter

    real = LoadAdapter.apply

    def planted(self, subject, step, adapters, locations):
        out = real(self, subject, step, adapters, locations)
        _scale_lora_b(subject.model, 1 + 1e-4, first_only=True)
        return out

    monkeypatch.setattr(LoadAdapter, "apply", planted)
    r = run_case(_case(write_scenario(ONE_LOAD)), cache_root)
    out = r.steps[0].output
    assert out.rule == "exact" and not out.matches
    assert _statuses(r.steps[0])["matches_reference"] == "fail"
    loose = TOLERANCES["fp32"]
    assert out.atol < out.max_abs_diff <= loose.atol, out  # inside the old bound, outside the exact one


def test_without_the_planted_error_the_exact_rule_holds(cache_root, write_scenario):
    r = run_case(_case(write_scenario(ONE_LOAD)), cache_root)
    assert r.verdict == "pass", r.reason
    assert r.steps[0].output.rule == "exact" and r.steps[0].output.max_abs_diff == 0


def _swap_to_twin(twin: dict) -> str:
    """ONE_LOAD, then the adapter `twin` hotswapped in."""
    swap = {"op": "load_adapter", "adapter": "twin", "name": "default", "hotswap": True}
    return scenario_toml("exact", [LOAD_DEFAULT, swap], adapters={"a": ADAPTER, "twin": twin})


# The same adapter spec under a second key, swapped in.
SAME_TWICE = _swap_to_twin(ADAPTER)


def test_a_swap_to_an_identical_adapter_cannot_be_told_apart(cache_root, write_scenario):
    """Planted in the scenario: the swapped-in adapter equals the loaded one, so a swap that did nothing
    would pass the output check. The step fails with the distinguishability message."""
    r = run_case(_case(write_scenario(SAME_TWICE)), cache_root)
    swap = r.steps[1]
    assert swap.output.matches  # the output check alone passes
    assert swap.contrast.margin == 0 and not swap.contrast.distinguishable
    assert "distinguishable: this check cannot tell the states apart" in r.reason


def test_a_swap_to_another_adapter_is_told_apart(cache_root, write_scenario):
    other = _swap_to_twin({**ADAPTER, "seed": 6})
    assert other != SAME_TWICE
    r = run_case(_case(write_scenario(other)), cache_root)
    statuses = _statuses(r.steps[1])
    # The swap's output checks all hold; swap_in_place is transformers 5.23 rebinding the Parameters (its own
    # test: tests/ops/test_swap_in_place.py), not this rule's concern.
    assert statuses["distinguishable"] == statuses["matches_reference"] == "pass", r.reason
    assert r.steps[1].contrast.distinguishable and r.steps[1].contrast.margin > 1000


def test_a_declared_indistinguishable_step_must_really_leave_the_output(cache_root, write_scenario):
    """`distinguishable = false` is checked too: on a load that changes the output it fails."""
    text = ONE_LOAD + "expect = { distinguishable = false }\n"
    r = run_case(_case(write_scenario(text)), cache_root)
    assert _statuses(r.steps[0])["distinguishable"] == "fail"
    assert "declared distinguishable = false, but the references differ" in r.reason


def test_an_add_adapter_declared_indistinguishable_passes_and_says_so(cache_root):
    r = run_case(_case(SCENARIOS / "multi_adapter.toml", precision="fp32"), cache_root)
    add = r.steps[0]
    assert _statuses(add)["distinguishable"] == "pass" and add.contrast.margin == 0
    assert any("not distinguishable (declared)" in n for n in add.notes)


def _stale_swap(monkeypatch):
    """Planted: the swap leaves 0.1 % of the old scaling in every LoRA B (a stale swap that keeps the
    greedy argmax)."""
    from bench.ops.adapters import LoadAdapter

    real = LoadAdapter.apply

    def planted(self, subject, step, adapters, locations):
        out = real(self, subject, step, adapters, locations)
        if step.hotswap:
            _scale_lora_b(subject.model, 1.001, first_only=False)
        return out

    monkeypatch.setattr(LoadAdapter, "apply", planted)


@pytest.mark.slow
def test_generate_compares_logits_so_a_stale_swap_that_keeps_the_tokens_fails(cache_root, monkeypatch):
    _stale_swap(monkeypatch)
    r = run_case(_case(SCENARIOS / "generate_hotswap.toml", hotswap_path="peft"), cache_root)
    swap = r.steps[4]
    assert swap.output.kind == "tokens"
    assert swap.output.tokens_equal  # a token check alone would pass
    assert not swap.output.matches and swap.output.max_abs_diff > swap.output.atol
    assert "step 5 (load_adapter): matches_reference" in r.reason


@pytest.mark.slow
def test_generate_without_the_stale_swap_matches_in_tokens_and_logits(cache_root):
    r = run_case(_case(SCENARIOS / "generate_hotswap.toml", hotswap_path="peft"), cache_root)
    assert r.verdict == "pass", r.reason
    swap = r.steps[4]
    assert swap.output.tokens_equal and swap.output.rule == "exact"
    assert swap.output.max_abs_diff is not None and swap.output.max_abs_diff <= swap.output.atol
