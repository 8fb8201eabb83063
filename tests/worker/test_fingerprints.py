"""Known failures carry the bug's fingerprint (docs/verdicts.md): only the known bug is xfail.

Each rule is shown through run_case on a shipped scenario with a bug planted in the library, next to the same
case unplanted (the control), plus the loader's refusals and the gate's reading of a changed fingerprint.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from bench.errors import ScenarioError
from bench.judge.findings import judge_verdict
from bench.judge.thresholds import DEFAULT_POLICY
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.spec.schema import KnownFailure
from bench.worker.execute import run_case
from tests.conftest import LOAD_A, ONE_ADAPTER_SEED_0, REPO, SCENARIOS, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow


def _case(path, case_id):
    return next(c for c in expand(load_scenario(path)) if c.id == case_id)


def _outcomes(result, index):
    return {o.expectation: o for o in result.steps[index - 1].outcomes}


# ----- the loader


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"error": "not a class"}, "error", "exception class name"),
        ({"match": "("}, "match", "not a regular expression"),
        ({"band": [0.5]}, "band", "two numbers"),
        ({"band": [0.5, 0.1]}, "band", "low <= high"),
        ({"band": ["a", 1]}, "band", "two numbers"),
    ],
)
def test_a_bad_fingerprint_is_refused_naming_the_field(write_scenario, fields, field, message):
    marker = {"expectation": "matches_reference", "reason": "upstream", **fields}
    forward = {"op": "forward", "known_failure": marker}
    path = write_scenario(scenario_toml("fp", [LOAD_A, forward], matrix=None, adapters=ONE_ADAPTER_SEED_0))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert f"known_failure.{field}" in str(err.value) and message in str(err.value)


def test_a_fingerprint_is_read(write_scenario):
    raised = {"expectation": "succeeds", "reason": "upstream", "error": "RuntimeError", "match": "sizes"}
    banded = {"expectation": "matches_reference", "reason": "upstream", "band": [0, 1]}
    steps = [{**LOAD_A, "known_failure": raised}, {"op": "forward", "known_failure": banded}]
    path = write_scenario(scenario_toml("fp", steps, matrix=None, adapters=ONE_ADAPTER_SEED_0))
    s = load_scenario(path)
    assert s.steps[0].known_failures[0].fingerprint == "raises RuntimeError, message ~ /sizes/"
    assert s.steps[1].known_failures[0].band == (0.0, 1.0)


def _shipped_markers():
    for folder in ("scenarios", "examples"):
        for path in sorted((REPO / folder).rglob("*.toml")):
            scenario = load_scenario(path)
            kfs = [k for s in scenario.steps for k in s.known_failures] + list(scenario.expect.known_failures)
            for k in kfs:
                yield path.relative_to(REPO), k


def test_every_shipped_known_failure_has_a_fingerprint():
    markers = list(_shipped_markers())
    assert len(markers) >= 15
    assert [(str(p), k.expectation) for p, k in markers if not k.fingerprinted] == []


# ----- the rule itself: NaN and infinity never match, a band is a band, an error is its class


def test_a_band_never_matches_a_value_that_is_not_a_finite_number():
    k = KnownFailure("matches_reference", "upstream", band=(0.0, 1e9))
    assert k.mismatch("", 0.5, ()) is None
    for bad in (math.nan, math.inf, -math.inf, None):
        assert "not a finite value" in k.mismatch("", bad, ())
    assert "outside" in k.mismatch("", 2e9, ())


def test_an_error_fingerprint_reads_the_class_hierarchy():
    k = KnownFailure("succeeds", "upstream", error="RuntimeError", match="ignore_mismatched_sizes")
    assert (
        k.mismatch("raised RuntimeError: ignore_mismatched_sizes", None, ("RuntimeError", "Exception"))
        is None
    )
    assert "got ValueError" in k.mismatch("raised ValueError: x", None, ("ValueError", "Exception"))
    assert "does not contain" in k.mismatch("raised RuntimeError: other", None, ("RuntimeError",))


# ----- through run_case: planted bugs turn the shipped markers red


def _plant_after_transformers_hotswap(monkeypatch, change):
    """A planted transformers bug: load_adapter(hotswap=True) applies `change` to every lora_B it swapped."""
    from transformers.integrations.peft import PeftAdapterMixin

    original = PeftAdapterMixin.load_adapter

    def planted(self, *args, hotswap=False, **kwargs):
        out = original(self, *args, hotswap=hotswap, **kwargs)
        if hotswap is True:
            with torch.no_grad():
                for module in self.modules():
                    for layer in getattr(module, "lora_B", {}).values():
                        change(layer.weight)
        return out

    monkeypatch.setattr(PeftAdapterMixin, "load_adapter", planted)


ALPHA = SCENARIOS / "hotswap_alpha.toml"
ALPHA_CASE = "hotswap-alpha[fp32-aot_eager-transformers]"


def test_nan_under_the_stale_alpha_marker_is_a_fail(cache_root, monkeypatch):
    _plant_after_transformers_hotswap(monkeypatch, lambda w: w.fill_(float("nan")))
    r = run_case(_case(ALPHA, ALPHA_CASE), cache_root)
    assert r.verdict == "fail", r.reason
    o = _outcomes(r, 5)["matches_reference"]
    assert o.status == "fail" and "the known failure's signature does not match" in o.message
    assert "not a finite value" in o.message


def test_the_stale_alpha_itself_stays_a_known_failure(cache_root):
    r = run_case(_case(ALPHA, ALPHA_CASE), cache_root)
    assert r.verdict == "xfail", r.reason
    o = _outcomes(r, 5)["matches_reference"]
    assert o.status == "xfail" and "[fingerprint: value in [" in o.known_failure


def test_a_scaled_swap_under_the_stale_alpha_marker_is_a_fail(cache_root, monkeypatch):
    """Three times the swapped B: still wrong, still silent, but not the stale-scaling bug's difference."""
    _plant_after_transformers_hotswap(monkeypatch, lambda w: w.mul_(3.0))
    r = run_case(_case(ALPHA, ALPHA_CASE), cache_root)
    o = _outcomes(r, 5)["matches_reference"]
    assert o.status == "fail" and "is outside" in o.message, o.message


RANK = SCENARIOS / "hotswap_transformers.toml"
RANK_CASE = "hotswap-transformers[fp32-aot_eager]"


def test_another_exception_under_a_raise_marker_is_a_fail(cache_root, monkeypatch):
    from transformers.integrations.peft import PeftAdapterMixin

    original = PeftAdapterMixin.load_adapter

    def planted(self, *args, hotswap=False, **kwargs):
        if hotswap is True:
            raise ValueError("planted: a different bug in the same call")
        return original(self, *args, hotswap=hotswap, **kwargs)

    monkeypatch.setattr(PeftAdapterMixin, "load_adapter", planted)
    r = run_case(_case(RANK, RANK_CASE), cache_root)
    o = _outcomes(r, 5)["succeeds"]
    assert o.status == "fail" and "expected the bug to raise RuntimeError, got ValueError" in o.message


def test_the_known_raise_stays_a_known_failure(cache_root):
    r = run_case(_case(RANK, RANK_CASE), cache_root)
    o = _outcomes(r, 5)["succeeds"]
    assert o.status == "xfail", o.message


# ----- no infinite or NaN reference ever matches


def test_an_infinite_reference_logit_matches_nothing(cache_root, monkeypatch, write_scenario):
    from bench.engine.reference import ReferenceOracle

    original = ReferenceOracle.logits

    def planted(self, state):
        ref = original(self, state).clone()
        ref[0, 0, 0] = float("inf")
        return ref

    path = write_scenario(scenario_toml("inf-ref", [LOAD_A, "forward"]))
    (case,) = expand(load_scenario(path))
    control = run_case(case, cache_root)
    assert _outcomes(control, 1)["matches_reference"].held
    monkeypatch.setattr(ReferenceOracle, "logits", planted)
    r = run_case(case, cache_root)
    assert not _outcomes(r, 1)["matches_reference"].held and r.verdict == "fail"


# ----- the gate reads a changed fingerprint as a regression


def test_an_xfail_on_another_fingerprint_is_a_regression():
    p = DEFAULT_POLICY["verdict"]
    old = ("stale alpha [fingerprint: value in [0.2, 0.45]]",)
    new = ("stale alpha [fingerprint: value in [0, 10]]",)
    assert judge_verdict(p, "c", "xfail", "xfail", old, new).status == "regression"
    assert judge_verdict(p, "c", "xfail", "xfail", old, old).status == "unchanged"  # control


def test_known_failure_text_carries_the_fingerprint():
    from bench.results.verdict import outcome

    k = KnownFailure("matches_reference", "stale alpha", band=(0.2, 0.45))
    o = outcome("matches_reference", "true", "false", False, "diff 0.3", k, measured=0.3)
    assert o.status == "xfail" and o.known_failure == "stale alpha [fingerprint: value in [0.2, 0.45]]"
    bare = outcome(
        "matches_reference", "true", "false", False, "diff 0.3", replace(k, band=None), measured=0.3
    )
    assert bare.status == "xfail" and bare.known_failure == "stale alpha"
