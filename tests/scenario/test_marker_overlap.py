"""Two known failures that could cover the same expectation of the same case are refused when the file loads:
the decision reads the first marker that applies (bench.results.verdict.find_known), so the second would never
be read (issue 27)."""

from __future__ import annotations

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario

HEAD = """
[scenario]
name = "markers"
model = "builtin:tiny-llama"

[matrix]
compile = ["none"]
precision = ["fp32", "bf16"]

[adapters.a]
rank = 4

[[steps]]
op = "load_adapter"
adapter = "a"
"""


def _with_markers(*markers: str) -> str:
    return HEAD + "known_failures = [\n" + "".join(f"  {m},\n" for m in markers) + "]\n"


OVERLAPPING = {
    "no when on either": (
        '{ expectation = "matches_reference", band = [0.1, 0.2], reason = "x" }',
        '{ expectation = "matches_reference", band = [0.3, 0.4], reason = "y" }',
    ),
    "one scoped, one not": (
        '{ expectation = "matches_reference", band = [0.1, 0.2], when = { precision = ["bf16"] }, reason = "x" }',
        '{ expectation = "matches_reference", band = [0.3, 0.4], reason = "y" }',
    ),
    "shared value": (
        '{ expectation = "succeeds", when = { precision = ["fp32", "bf16"] }, error = "ValueError", reason = "x" }',
        '{ expectation = "succeeds", when = { precision = ["bf16"] }, error = "KeyError", reason = "y" }',
    ),
}
DISJOINT = {
    "other precision": (
        '{ expectation = "matches_reference", band = [0.1, 0.2], when = { precision = ["fp32"] }, reason = "x" }',
        '{ expectation = "matches_reference", band = [0.3, 0.4], when = { precision = ["bf16"] }, reason = "y" }',
    ),
    "other expectation": (
        '{ expectation = "matches_reference", band = [0.1, 0.2], reason = "x" }',
        '{ expectation = "succeeds", error = "ValueError", reason = "y" }',
    ),
}


@pytest.mark.parametrize("name", sorted(OVERLAPPING))
def test_markers_that_can_both_apply_are_refused_naming_the_field(name, write_scenario):
    path = write_scenario(_with_markers(*OVERLAPPING[name]))
    with pytest.raises(
        ScenarioError,
        match=r"scenario.toml: step 1 \(load_adapter\).known_failures: markers 0 and 1 both apply",
    ):
        load_scenario(path)


@pytest.mark.parametrize("name", sorted(DISJOINT))
def test_disjoint_markers_load(name, write_scenario):
    """The control: the same pairs with no case in common load, both kept."""
    scenario = load_scenario(write_scenario(_with_markers(*DISJOINT[name])))
    assert len(scenario.steps[0].known_failures) == 2
