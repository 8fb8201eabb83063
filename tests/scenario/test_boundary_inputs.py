"""Boundary values the loader used to accept and the run then could not use: each crashed the case (an error
verdict) or failed it for the input's sake, not the library's. Found by running every serve and measure field
at its bounds (2026-12-07). Each is refused now when the file is read, naming the field; each test's control is
the nearest value that still loads."""

from __future__ import annotations

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from tests.scenarios import LOAD_A, scenario_toml

SERVE = {"op": "serve", "adapters": ["a"], "requests": 4, "arrival": "poisson"}
SERVING = {"compile": ["none"], "strategy": ["reload"]}


def _refused(write_scenario, text: str, field: str, message: str) -> None:
    path = write_scenario(text)
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert str(path) in str(e.value) and field in str(e.value) and message in str(e.value)


@pytest.mark.parametrize(
    "rate, loads", [(1e-306, False), (9e-4, False), (1e-3, True), (1e6, True), (2e6, False)]
)
def test_an_open_loop_rate_within_what_the_virtual_clock_resolves(write_scenario, rate, loads):
    """At 1e-306 requests per second the second arrival overflowed to inf and its latency was NaN: the
    timing summary crashed the case. Below 1e-3 the arrival times outgrow the clock's resolution."""
    text = scenario_toml("rate", [{**SERVE, "rate_rps": rate}], matrix=SERVING)
    if loads:
        assert load_scenario(write_scenario(text)).steps[0].serve.rate_rps == rate
    else:
        _refused(write_scenario, text, "rate_rps", "requests per second in [0.001, 1e+06]")


@pytest.mark.parametrize("kind, loads", [("forward", False), ("generate", True)])
def test_a_generate_step_needs_a_generate_workload(write_scenario, kind, loads):
    """In a forward workload the reference holds no tokens: its check crashed ('tuple' has no .float)."""
    text = scenario_toml("gen", [LOAD_A, "generate"], tables={"workload": {"kind": kind, "new_tokens": 2}})
    if loads:
        assert [s.op for s in load_scenario(write_scenario(text)).steps] == ["load_adapter", "generate"]
    else:
        _refused(write_scenario, text, "step 2 (generate)", 'generate needs [workload] kind = "generate"')


@pytest.mark.parametrize("seq_len, loads", [(1, False), (2, True)])
def test_training_needs_a_next_token(write_scenario, seq_len, loads):
    """With one token per sequence the causal LM loss has nothing to predict: NaN from the first step, and
    loss_decreases failed."""
    steps = [{"op": "add_adapter", "adapter": "a"}, {"op": "train", "steps": 2}]
    text = scenario_toml("train", steps, tables={"workload": {"seq_len": seq_len}})
    if loads:
        assert load_scenario(write_scenario(text)).workload.seq_len == seq_len
    else:
        _refused(write_scenario, text, "step 2 (train)", "seq_len of at least 2")


@pytest.mark.parametrize(
    "compile, new_tokens, loads",
    [
        (["aot_eager"], 1, False),
        (["none", "aot_eager"], 1, False),
        (["aot_eager"], 2, True),
        (["none"], 1, True),
    ],
)
def test_a_compiled_generate_workload_needs_a_decoding_step(write_scenario, compile, new_tokens, loads):
    """transformers compiles generate's decoding steps only: with one new token nothing was compiled, and
    compile_effective failed ("compiled no frame"). Eager, one new token is fine."""
    workload = {"kind": "generate", "new_tokens": new_tokens}
    steps = [LOAD_A, "generate"] if compile == ["none"] else [LOAD_A, "compile", "generate"]
    text = scenario_toml("cgen", steps, matrix={"compile": compile}, tables={"workload": workload})
    if loads:
        assert load_scenario(write_scenario(text)).workload.new_tokens == new_tokens
    else:
        _refused(write_scenario, text, "workload.new_tokens", "new_tokens of at least 2")


@pytest.mark.parametrize(
    "fields, field, loads",
    [
        ({"alpha": 0}, "alpha", False),
        ({"alpha": -16}, "alpha", False),
        ({"alpha": 1e308}, "alpha", False),
        ({"alpha_pattern": {"q_proj": 0}}, "alpha_pattern.q_proj", False),
        ({"alpha": 1e6, "alpha_pattern": {"q_proj": 0.5}}, "", True),
    ],
)
def test_an_adapters_alpha_in_the_range_a_familys_alphas_have(write_scenario, fields, field, loads):
    """alpha = 1e308 gave non-finite logits (an oracles_agree fail), 0 an adapter equal to the base; a
    family's alphas were already held to (0, 1e6]."""
    text = scenario_toml("alpha", [LOAD_A], adapters={"a": {"rank": 4, **fields}})
    if loads:
        (spec,) = [a for a in load_scenario(write_scenario(text)).adapters if a.key == "a"]
        assert spec.alpha == fields["alpha"] and spec.alpha_pattern == (("q_proj", 0.5),)
    else:
        _refused(write_scenario, text, field, "must be in (0, 1e+06]")
