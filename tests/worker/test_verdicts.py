"""Verdict rules with their negative controls (docs/verdicts.md): each test plants the fault the rule exists
for and shows the rule catching it."""

from __future__ import annotations

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.conftest import LOAD_A, ONE_ADAPTER_SEED_0, SCENARIOS, scenario_toml

SCENARIO = scenario_toml("oracle-fault", [LOAD_A, "forward"], adapters=ONE_ADAPTER_SEED_0)


def _only_case(path):
    (case,) = expand(load_scenario(path))
    return case


def test_a_reference_that_cannot_be_built_is_an_error_of_its_own(cache_root, write_scenario, monkeypatch):
    """transformers 5.24 + peft 0.21: the subject's load_adapter succeeded, the reference's set_adapter raised.
    The step must say the reference failed, and the op's own `succeeds` must hold."""
    from bench.engine.reference import ReferenceOracle

    real = ReferenceOracle._fresh

    def planted(self, state):
        if state.effective:
            raise ValueError("planted: the reference's set_adapter refuses this peft")
        return real(self, state)

    monkeypatch.setattr(ReferenceOracle, "_fresh", planted)
    r = run_case(_only_case(write_scenario(SCENARIO)), cache_root)
    assert r.verdict == "error"
    assert r.reason.startswith(
        "step 1 (load_adapter): reference: reference could not be built: ValueError: planted"
    )
    load = r.steps[0]
    assert {o.expectation: o.status for o in load.outcomes}["succeeds"] == "pass"
    assert load.error is None  # the op itself raised nothing


def test_without_the_planted_fault_the_same_case_passes(cache_root, write_scenario):
    """The control of the control: the scenario above is sound when the reference builds."""
    r = run_case(_only_case(write_scenario(SCENARIO)), cache_root)
    assert r.verdict == "pass", r.reason


def _marker(op: str, fields: dict, expectation: str) -> str:
    """load_adapter, then an `op` step marked as a known failure of `expectation`."""
    marked = {"op": op, **fields, "known_failure": {"expectation": expectation, "reason": "upstream bug"}}
    return scenario_toml("markers", [LOAD_A, marked], matrix=None, adapters=ONE_ADAPTER_SEED_0)


@pytest.mark.parametrize(
    ("op", "fields", "expectation"),
    [
        ("active_adapters", {}, "distinguishable"),  # only state changes are told apart
        ("compile", {}, "matches_reference"),  # compile makes no model call
        ("forward", {}, "loss_decreases"),
        ("disable_adapters", {}, "active_adapters"),
    ],
)
def test_a_marker_that_can_never_be_evaluated_is_refused(op, fields, expectation, write_scenario):
    path = write_scenario(_marker(op, fields, expectation))
    with pytest.raises(ScenarioError, match=f"names '{expectation}', which a {op} step never decides"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("op", "fields", "expectation"),
    [
        ("load_adapter", {"adapter": "a", "name": "b"}, "distinguishable"),
        ("set_adapter", {"names": ["a"]}, "distinguishable"),
        ("forward", {}, "matches_reference"),
    ],
)
def test_a_marker_the_op_can_evaluate_is_accepted(op, fields, expectation, write_scenario):
    """Negative control: the rule refuses only markers that can never apply."""
    load_scenario(write_scenario(_marker(op, fields, expectation)))


def test_matches_reference_on_a_step_without_a_model_call_is_refused(write_scenario):
    compile_step = {"op": "compile", "expect": {"matches_reference": True}}
    text = scenario_toml("markers", [LOAD_A, compile_step], matrix=None, adapters=ONE_ADAPTER_SEED_0)
    with pytest.raises(ScenarioError, match="makes no model call"):
        load_scenario(write_scenario(text))


COMPILED = scenario_toml(
    "compiled",
    [LOAD_A, "compile", {"op": "forward", "expect": {"recompiles": "== 0"}}],
    matrix={"compile": ["eager"]},
    adapters=ONE_ADAPTER_SEED_0,
)


def test_a_compile_step_that_compiles_nothing_fails(cache_root, write_scenario, monkeypatch):
    """A compile that silently leaves the model eager would make every recompile check pass vacuously."""
    from bench.ops.setup import Compile

    monkeypatch.setattr(
        Compile, "apply", lambda self, subject, *a: setattr(subject, "compiled", subject.model)
    )
    r = run_case(_only_case(write_scenario(COMPILED)), cache_root)
    assert r.verdict == "fail"
    assert "compile_effective: compile had no effect" in r.reason


def test_a_real_compile_step_passes_the_same_check(cache_root, write_scenario):
    r = run_case(_only_case(write_scenario(COMPILED)), cache_root)
    assert r.verdict == "pass", r.reason
    forward = r.steps[2]
    assert {o.expectation: o.held for o in forward.outcomes}["compile_effective"]


@pytest.mark.slow
def test_more_frame_compiles_than_torch_keeps_by_default_are_all_counted():
    """torch keeps 64 compilation-metrics records; a step with more must still count every one."""
    import torch

    from bench.engine.probes.compile import configure_dynamo_for_counting, count_compiles

    configure_dynamo_for_counting()
    assert torch._dynamo.config.fail_on_recompile_limit_hit  # no silent fallback to eager at the limit
    fn = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    with count_compiles() as window:
        for n in range(1, 67):
            fn(torch.ones(n))
    assert window.stats.frame_compiles == 66
    assert window.stats.recompiles == 65
    # Negative control: torch's default buffer would have kept only 64 of them.
    torch._dynamo.utils.set_compilation_metrics_limit(64)
    with count_compiles() as window:
        for n in range(67, 133):
            fn(torch.ones(n))
    assert window.stats.frame_compiles == 64
    configure_dynamo_for_counting()


PATTERNS = scenario_toml(
    "two-oracles",
    [{"op": "load_adapter", "adapter": "p"}, "forward"],
    adapters={
        "p": {"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"], "alpha_pattern": {"v_proj": 64}}
    },
)


def test_a_library_bug_both_the_subject_and_its_reference_share_fails_on_the_math(
    cache_root, write_scenario, monkeypatch
):
    """Planted in peft itself: LoRA layers ignore alpha_pattern. The subject and the library's fresh reference
    load through the same code, so they agree (matches_reference holds); the math oracle does not."""
    from peft.tuners.lora.layer import LoraLayer

    original = LoraLayer.update_layer

    def buggy(self, adapter_name, r, lora_alpha, config, **kwargs):
        return original(self, adapter_name, r, lora_alpha=config.lora_alpha, config=config, **kwargs)

    monkeypatch.setattr(LoraLayer, "update_layer", buggy)
    r = run_case(_only_case(write_scenario(PATTERNS)), cache_root)
    assert r.verdict == "fail"
    assert "oracles_agree: the library's reference disagrees with the math" in r.reason
    outcomes = {o.expectation: o.held for o in r.steps[0].outcomes}
    assert outcomes["matches_reference"] and not outcomes["oracles_agree"]
    assert not r.steps[0].oracle_agreement.agree


def test_the_same_scenario_without_the_library_bug_has_both_oracles_agree(cache_root, write_scenario):
    r = run_case(_only_case(write_scenario(PATTERNS)), cache_root)
    assert r.verdict == "pass", r.reason
    assert all(s.oracle_agreement.agree for s in r.steps if s.oracle_agreement is not None)
    assert sum(s.oracle_agreement is not None for s in r.steps) == 2


@pytest.mark.slow
def test_without_error_on_recompile_no_recompile_error_is_recorded(cache_root, tmp_path, monkeypatch):
    """Negative control for the strict-mode test in tests/worker/test_harness.py: if the harness stopped entering
    error_on_recompile, the recompile would still be counted (the outcome fails on the count), but no
    RecompileError would be recorded, so that test's assertion on `recompile_error` catches it."""
    import contextlib

    import bench.worker.execute as execute

    text = (SCENARIOS / "recompile_control.toml").read_text()
    text = text.replace('recompiles = ">= 1", matches_reference', 'recompiles = "== 0", matches_reference')
    text = text.replace('total_recompiles = ">= 1"', "")
    path = tmp_path / "control_zero.toml"
    path.write_text(text)
    monkeypatch.setattr(execute, "no_recompile_allowed", lambda enabled: contextlib.nullcontext())
    r = run_case(_only_case(path), cache_root)
    load = r.steps[3]
    assert load.strict and load.compile.recompiles >= 1
    assert {o.expectation: o.status for o in load.outcomes}["recompiles"] == "fail"
    assert load.recompile_error is None


TRAIN = (SCENARIOS / "train_lora.toml").read_text()


def _train_case(write_scenario):
    (case,) = [c for c in expand(load_scenario(write_scenario(TRAIN))) if c.params["precision"] == "fp32"]
    return case


def test_a_real_training_step_lowers_the_fixed_batch_loss(cache_root, write_scenario):
    r = run_case(_train_case(write_scenario), cache_root)
    assert r.verdict == "pass", r.reason
    t = r.steps[1].train
    assert t.fixed_batch_loss_after < 0.99 * t.fixed_batch_loss_before


def test_a_no_op_optimizer_step_fails_the_training_check(cache_root, write_scenario, monkeypatch):
    """Planted: AdamW.step does nothing. The fixed batch's loss (eval mode) is then unchanged, and the check
    fails; the running losses of different batches with dropout could still have fallen by chance."""
    import torch

    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    r = run_case(_train_case(write_scenario), cache_root)
    train = r.steps[1]
    assert train.train.fixed_batch_loss_after == train.train.fixed_batch_loss_before
    assert {o.expectation: o.status for o in train.outcomes}["loss_decreases"] == "fail"
    assert "step 2 (train): loss_decreases: the fixed batch's loss went from" in r.reason
