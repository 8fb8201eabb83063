"""A case's features, read from its scenario: what each op and the workload bring."""

from __future__ import annotations

from dataclasses import replace

from bench.estimate.features import case_features
from bench.scenario import load_scenarios
from bench.spec.cases import expand_all
from tests.conftest import MINIMAL, SCENARIOS

TOGGLES = (
    MINIMAL.replace('compile = ["aot_eager"]', 'compile = ["none", "aot_eager"]')
    + """
[[steps]]
op = "disable_adapters"

[[steps]]
op = "enable_adapters"
"""
)


def _cases(write_scenario, text):
    return {c.compile.label: c for c in expand_all(load_scenarios([write_scenario(text)]))}


def test_counts_steps_checks_passes_and_compiles(write_scenario):
    cases = _cases(write_scenario, TOGGLES)
    compiled = case_features(cases["aot_eager"], 1000)
    # load_adapter, compile, forward, disable, enable: 4 checked outputs (the compile op changes no state).
    assert (compiled.steps, compiled.checks) == (5, 4)
    assert compiled.compiles == 3  # the checked calls after the compile op
    # per check: subject + reference + oracle calls; the forward: first call + 3 warm-up + 20 rounds
    assert compiled.passes == 4 * 3 + 24
    assert compiled.tokens == compiled.passes * 2 * 16
    assert compiled.timed_floor_s == 0.1
    vector = compiled.vector()
    assert vector["compiles:aot_eager"] == 3
    assert vector["load_gb"] == (1 + 2 * 4) * 4000 / 1e9
    # Negative control: the same steps eager compile nothing.
    eager = case_features(cases["none"], 1000)
    assert eager.compiles == 0 and "compiles:aot_eager" not in eager.vector()
    assert (eager.steps, eager.checks, eager.passes) == (compiled.steps, compiled.checks, compiled.passes)


def test_a_first_trace_counts_the_layers_it_walks(write_scenario):
    """The compile op's first checked call traces the whole model: one trace, times the model's layers (the
    compile term that tells a 30-layer 135M shape from a 24-layer 0.5B one); later checked calls are guards or
    small recompiles, counted per call as before."""
    cases = _cases(write_scenario, TOGGLES)
    compiled = case_features(cases["aot_eager"], 1000, layers=30)
    assert (compiled.compiles, compiled.traces) == (3, 1)
    assert compiled.vector()["compile_layers:aot_eager"] == 30
    assert case_features(cases["aot_eager"], 1000, layers=24).vector()["compile_layers:aot_eager"] == 24
    # Negative controls: eager traces nothing, and unknown layers leave the term out (the per-call one stays).
    eager = case_features(cases["none"], 1000, layers=30)
    assert eager.traces == 0 and not any(k.startswith("compile") for k in eager.vector())
    unknown = case_features(cases["aot_eager"], 1000).vector()
    assert "compile_layers:aot_eager" not in unknown and unknown["compiles:aot_eager"] == 3


def test_a_compiled_serve_step_traces_once_in_its_strategy():
    (case, *_) = expand_all(load_scenarios([SCENARIOS / "serving.toml"]))
    compiled = replace(case, compile=replace(case.compile, backend="aot_eager"))
    assert case_features(compiled, 1000, layers=2).traces == 1
    eager = replace(case, compile=replace(case.compile, backend="none"))
    assert case_features(eager, 1000, layers=2).traces == 0  # negative control


def test_generate_is_one_pass_per_new_token(write_scenario):
    text = (
        MINIMAL.replace('op = "forward"', 'op = "generate"')
        + '\n[workload]\nkind = "generate"\nnew_tokens = 5\n'
    )
    f = case_features(next(iter(_cases(write_scenario, text).values())), 1000)
    forward = case_features(next(iter(_cases(write_scenario, MINIMAL).values())), 1000)
    assert f.passes == 5 * forward.passes


def test_unknown_size_and_skipped_cases(write_scenario):
    case = next(iter(_cases(write_scenario, MINIMAL).values()))
    assert case_features(case, None).vector() is None
    assert case_features(case, None).weight_bytes is None
    assert case_features(case, 1000, skipped=True).vector() == {"case": 1.0}


def test_train_steps_and_repeat_loads_add_their_work():
    def features(name):
        (case, *_) = expand_all(load_scenarios([SCENARIOS / name]))
        return case, case_features(case, 1000)

    case, train = features("train_lora.toml")
    steps = sum(s.train_steps or 0 for s in case.scenario.steps)
    assert steps == 20
    # Negative control: the same case without its train steps has 3 passes per optimizer step fewer.
    without = [s for s in case.scenario.steps if not s.train_steps]
    lighter = case_features(replace(case, scenario=replace(case.scenario, steps=tuple(without))), 1000)
    assert train.passes - lighter.passes == 3 * steps  # a train step checks no output of its own
    case, growth = features("memory_growth.toml")
    repeats = sum((s.count or 1) - 1 for s in case.scenario.steps)
    assert repeats > 0 and growth.steps == len(case.scenario.steps) + repeats
