"""harness.freeze_params (issue 10, item 5): the suite measures the flow users run, and the requires_grad
reset that hides a recompile is an explicit, recorded scenario option with its negative control."""

from __future__ import annotations

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.conftest import MINIMAL, SCENARIOS

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow


def _only(path):
    (case,) = expand(load_scenario(path))
    return case


def _step(result, index):
    return next(s for s in result.steps if s.index == index)


def test_freeze_params_is_off_by_default_and_read_from_the_harness_table(write_scenario):
    assert load_scenario(write_scenario(MINIMAL)).harness.freeze_params is False
    frozen = load_scenario(write_scenario(MINIMAL + "\n[harness]\nfreeze_params = true\n"))
    assert frozen.harness.freeze_params is True


@pytest.mark.parametrize(
    ("table", "fragments"),
    [
        ('[harness]\nfreeze_params = "yes"', ["harness.freeze_params", "expected a boolean"]),
        (
            "[harness]\nfreeze_param = true",
            ["harness.freeze_param", "unknown key", "did you mean 'freeze_params'"],
        ),
        ("harness = 1", ["harness"]),
    ],
)
def test_a_bad_harness_table_names_the_file_and_the_field(write_scenario, table, fragments):
    path = write_scenario(MINIMAL.replace("[matrix]", f"{table}\n\n[matrix]"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    assert str(path) in text
    for fragment in fragments:
        assert fragment in text, text


def test_the_users_flow_recompiles_on_the_requires_grad_guard(cache_root):
    """requires_grad_recompile.toml: enable_adapters back to the compiled state recompiles, because it set
    requires_grad=True on the LoRA weights; the result records that the harness left them alone."""
    r = run_case(_only(SCENARIOS / "requires_grad_recompile.toml"), cache_root)
    assert r.verdict == "pass", r.reason
    assert r.harness == {"freeze_params": False}
    enable = _step(r, 5)
    assert enable.compile.recompiles >= 1
    assert any("as the library left them" in n for n in enable.notes)


def test_the_workaround_side_by_side_reuses_the_graph(cache_root):
    r = run_case(_only(SCENARIOS / "requires_grad_frozen.toml"), cache_root)
    assert r.verdict == "pass", r.reason
    assert r.harness == {"freeze_params": True}
    enable = _step(r, 5)
    assert enable.strict and enable.compile.recompiles == 0
    assert any(n.startswith("harness.freeze_params: requires_grad reset") for n in enable.notes)


def test_a_harness_that_resets_requires_grad_behind_the_scenarios_back_is_caught(cache_root, monkeypatch):
    """Negative control: the old behaviour planted back (reset after every state op whatever the scenario
    says). The recompile the user gets disappears, and the scenario that states it fails."""
    import bench.worker.execute as execute

    real = execute.after_state_op
    monkeypatch.setattr(
        execute, "after_state_op", lambda model, step, freeze, run: real(model, step, True, run)
    )
    r = run_case(_only(SCENARIOS / "requires_grad_recompile.toml"), cache_root)
    assert r.verdict == "fail"
    assert r.reason.startswith("step 5 (enable_adapters): recompiles: 0 recompile(s), expected >= 1")
