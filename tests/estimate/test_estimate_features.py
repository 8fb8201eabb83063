"""A case's features, read from its scenario: what each op and the workload bring."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.engine.serving.stream import make_stream
from bench.estimate.features import case_features
from bench.estimate.policy import SWAP_LOADS
from bench.ops import op_named
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


def _serving_cases():
    return {(c.strategy, c.hotswap_path): c for c in expand_all(load_scenarios([SCENARIOS / "serving.toml"]))}


def test_serve_steps_count_each_strategys_adapter_loads():
    """A serve step's `load_adapter` calls as each strategy makes them: the estimate's only way to tell a
    strategy that reloads per switch from one that loaded everything once."""
    cases = _serving_cases()
    (serve,) = [s.serve for s in next(iter(cases.values())).scenario.steps if s.serve is not None]
    n = len(serve.adapters)
    stream = make_stream(serve)
    switches = sum(1 for i in range(1, len(stream)) if stream[i].adapter != stream[i - 1].adapter)
    assert 0 < switches < len(stream)

    def serve_loads(strategy, path):
        f = case_features(cases[(strategy, path)], 1000, layers=3)
        assert f.vector()["adapter_load_layers"] == f.adapter_loads * 3
        return f.adapter_loads - _op_loads_before_serve(cases[(strategy, path)])

    path = next(p for s, p in cases if s == "side_by_side")
    # setup loads every adapter (side_by_side, mixed_batch) or the first (reload, hotswap); the check loads
    # each adapter once into its reference.
    assert serve_loads("side_by_side", path) == serve_loads("mixed_batch", path) == 2 * n
    assert serve_loads("reload", path) == 1 + switches + n
    hotswaps = {p: serve_loads("hotswap", p) for s, p in cases if s == "hotswap"}
    assert hotswaps == pytest.approx({p: 1 + switches * SWAP_LOADS[p] + n for p in hotswaps})
    # Negative control: a load per switch puts reload above every strategy that swaps or loaded once.
    assert serve_loads("reload", path) > max(serve_loads("side_by_side", path), *hotswaps.values())


def test_the_check_loads_only_the_adapters_the_stream_asks_for():
    """side_by_side loads every listed adapter in its setup; the check only those with a response to check."""
    case = next(c for (strategy, _), c in _serving_cases().items() if strategy == "side_by_side")
    steps = case.scenario.steps
    (serve,) = [s.serve for s in steps if s.serve is not None]
    short = replace(serve, requests=2)
    asked = len({r.adapter for r in make_stream(short)})
    assert asked < len(serve.adapters)
    shorter = replace(
        case,
        scenario=replace(
            case.scenario, steps=tuple(replace(s, serve=short) if s.serve else s for s in steps)
        ),
    )
    loads = case_features(shorter, 1000, layers=2).adapter_loads - _op_loads_before_serve(case)
    assert loads == len(serve.adapters) + asked


def _op_loads_before_serve(case):
    """The load ops of the serving scenario's other steps (one load_adapter each, none hotswapped)."""
    return sum(1 for s in case.scenario.steps if s.op == "load_adapter")


def test_a_serve_step_loads_one_reference_and_one_oracle_model_whatever_its_adapters():
    """The check holds one fresh base for every served adapter (bench.engine.serving.check), so the models it
    loads do not grow with the adapters, as `1 + 2 x checks` would have them."""
    case = next(iter(_serving_cases().values()))
    f = case_features(case, 1000)
    op_checks = sum(
        1
        for s in case.scenario.steps
        if s.serve is None and (op_named(s.op).checks_output or s.expect.raises is not None)
    )
    assert f.model_loads == 1 + 2 * op_checks + 2
    assert f.vector()["load_gb"] == f.model_loads * 4000 / 1e9
    # Negative control: the serve step's checked adapters are still counted as checks.
    assert f.checks > op_checks + 2 and 1 + 2 * f.checks > f.model_loads


def test_load_ops_count_one_load_and_a_hotswap_a_fraction(write_scenario):
    cases = _cases(write_scenario, MINIMAL)
    case = next(iter(cases.values()))
    plain = case_features(case, 1000, layers=2)
    loads = sum(1 for s in case.scenario.steps if s.op == "load_adapter")
    assert loads > 0 and plain.adapter_loads == loads
    swapped = replace(
        case,
        scenario=replace(
            case.scenario,
            steps=tuple(
                replace(s, hotswap=True) if s.op == "load_adapter" else s for s in case.scenario.steps
            ),
        ),
    )
    for path, fraction in SWAP_LOADS.items():
        f = case_features(replace(swapped, hotswap_path=path), 1000, layers=2)
        assert f.adapter_loads == loads * fraction
    # Unknown layers leave the term out, as the compile term's.
    assert "adapter_load_layers" not in case_features(case, 1000).vector()
