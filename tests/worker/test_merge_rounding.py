"""A merge writes W + scaling * B @ A into the base weights in the model's dtype: after it the subject computes
with other weights than the unmerged reference, and the exact rule of an eager backend is no longer the
computation's bound (issue 27: bounds come from the computation, so a correct library never fails)."""

from __future__ import annotations

import pytest

from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.spec.precision import tolerance_for
from bench.worker.execute import run_case
from tests.scenarios import FAST_TIMING, LOAD_A, scenario_toml

# small-llama, bf16, rank 16 on every projection: a merge big enough that its rounding exceeds the exact rule.
MERGE = scenario_toml(
    "merge-rounding",
    [LOAD_A, "merge_adapter", "unmerge_adapter"],
    model="builtin:small-llama",
    matrix={"precision": ["bf16"], "compile": ["none"]},
    timing=FAST_TIMING,
    adapters={
        "a": {
            "rank": 16,
            "alpha": 32,
            "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "seed": 1,
        }
    },
)


def test_the_rule_after_a_merge_is_the_loose_one_and_says_why():
    exact = tolerance_for("bf16", "none", "cpu", 2.0)
    merged = tolerance_for("bf16", "none", "cpu", 2.0, base_rounded=True)
    assert exact.rule == "exact" and merged.rule == "loose"
    assert merged.atol > exact.atol and "merge rounded" in merged.reason


@pytest.fixture(scope="module")
def merge_case(tmp_path_factory):
    path = tmp_path_factory.mktemp("merge") / "merge.toml"
    path.write_text(MERGE)
    (case,) = expand(load_scenario(path))
    return case


def test_a_correct_bf16_merge_passes_where_the_exact_rule_would_fail_it(merge_case, cache_root):
    """small-llama, bf16, rank 16 on every projection: the merged rounding is 0.0156 on logits of |ref| ~ 1.4,
    above the exact rule's 1 eps(bf16) x 1.4 = 0.011. The old rule failed this correct merge."""
    r = run_case(merge_case, cache_root)
    assert r.verdict == "pass", r.reason
    for step in r.steps[1:]:
        out = step.output
        assert out.rule == "loose" and "merge rounded" in out.rule_reason, out
    merged = r.steps[1].output
    exact_atol = merged.atol / tolerance_for("bf16", "none", "cpu", 1.0, base_rounded=True).atol * (2**-7)
    assert merged.max_abs_diff > exact_atol, (merged.max_abs_diff, exact_atol)


def test_a_merge_that_adds_the_delta_twice_still_fails(merge_case, cache_root, monkeypatch):
    """The control: the loose rule is no blanket. A planted merge that writes the delta twice fails."""
    from peft.tuners.lora.layer import Linear

    original = Linear.merge

    def twice(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.merged_adapters.clear()
        original(self, *args, **kwargs)

    monkeypatch.setattr(Linear, "merge", twice)
    r = run_case(merge_case, cache_root)
    assert r.verdict == "fail", r.reason
    assert not r.steps[1].output.matches, r.steps[1].output
