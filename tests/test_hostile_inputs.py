"""Issue 16: inputs a hostile user tries (beyond test_fuzz_loader's): impossible or empty expectations,
NaN in results, hostile failure reasons in repro scripts, out-of-range options, version pairs that cannot work.

Each test names its negative control: the planted bug (or the old behaviour) the check catches.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from bench.scenario.schema import _COMPARATORS, COUNT_BOUND, Comparison
from tests.conftest import MINIMAL

# ---------------------------------------------------------------------------------------------------------
# Impossible and always-true count expectations


def _brute_force(cmp: Comparison) -> str | None:
    held = [cmp.holds(n) for n in range(COUNT_BOUND + 1)]
    if not any(held):
        return "never"
    if all(held):
        return "always"
    return None


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(sorted(_COMPARATORS)), value=st.integers(0, 10**9))
def test_satisfiable_agrees_with_trying_every_count(op, value):
    """300 generated comparisons; the answer is checked against every count in [0, COUNT_BOUND].
    Control: probing only {0, value} calls `> 0` impossible and `<= 998` always true (seen failing)."""
    cmp = Comparison(op, value)
    why = cmp.satisfiable()
    want = _brute_force(cmp)
    assert (why is None) == (want is None), (cmp, why)
    if want == "never":
        assert "can never hold" in why
    if want == "always":
        assert "always holds" in why


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("< 0", "never"),
        (">= 1000", "never"),
        ("> 999", "never"),
        ("== 1000", "never"),
        (">= 0", "always"),
        ("!= 1000", "always"),
        ("<= 999", "always"),
        ("== 0", None),
        (">= 1", None),
        ("!= 0", None),
        ("<= 998", None),
    ],
)
def test_directed_comparisons(text, verdict):
    assert _brute_force(Comparison.parse(text)) == verdict
    assert (Comparison.parse(text).satisfiable() is None) == (verdict is None)


@pytest.mark.parametrize("key", ["recompiles", "graph_breaks"])
@pytest.mark.parametrize("text", ["< 0", ">= 1000", ">= 0"])
def test_loader_refuses_impossible_or_empty_step_expectations(write_scenario, key, text):
    scenario = MINIMAL.rstrip() + f'\nexpect = {{ {key} = "{text}" }}\n'
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(scenario))
    msg = str(info.value)
    assert f"step 3 (forward).expect.{key}" in msg or f"expect.{key}" in msg, msg
    assert "never hold" in msg or "always holds" in msg, msg


@pytest.mark.parametrize("key", ["total_recompiles", "total_graph_breaks"])
def test_loader_refuses_impossible_case_expectations(write_scenario, key):
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(MINIMAL + f'\n[expect]\n{key} = "< 0"\n'))
    assert f"expect.{key}" in str(info.value) and "never hold" in str(info.value)


def test_a_possible_expectation_still_loads(write_scenario):
    """Control for the three tests above: the same file with `== 0` loads."""
    s = load_scenario(write_scenario(MINIMAL.rstrip() + '\nexpect = { recompiles = "== 0" }\n'))
    assert str(s.steps[2].expect.recompiles) == "== 0"


@pytest.mark.parametrize("key", ["recompiles", "graph_breaks"])
def test_count_expectation_before_compile_is_refused(write_scenario, key):
    """Step 1 (load_adapter) runs before step 2 (compile): no count can exist there."""
    text = MINIMAL.replace('adapter = "a"\n', f'adapter = "a"\nexpect = {{ {key} = "== 0" }}\n', 1)
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(text))
    msg = str(info.value)
    assert "step 1 (load_adapter)" in msg and f"expect.{key} on a step before the model is compiled" in msg


def test_count_expectation_without_a_compile_step_is_refused(write_scenario):
    text = (
        MINIMAL.replace('[[steps]]\nop = "compile"\n', "").rstrip() + '\nexpect = { recompiles = "== 0" }\n'
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(text))
    assert "the scenario has no compile step" in str(info.value)
