"""Validation: every bad scenario gets the suite's own error naming the file, the step and the field."""

from __future__ import annotations

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario, load_scenarios
from bench.scenario.loader import discover
from tests.conftest import MINIMAL, SCENARIOS


def test_shipped_scenarios_load():
    scenarios = load_scenarios([SCENARIOS])
    names = {s.name for s in scenarios}
    assert {"hotswap-peft", "hotswap-transformers", "hotswap-alpha", "recompile-control", "toggles"} <= names


def test_example_scenarios_load_and_expand_beside_the_shipped_ones():
    # examples/ is run by hand (minutes on a CPU, or a GPU); a stale field there would only show on that
    # machine. Loading them with the shipped set also proves their names do not collide.
    from bench.spec.cases import expand

    examples = sorted((SCENARIOS.parent / "examples").rglob("*.toml"))
    assert {p.name for p in examples} >= {
        "serving_135m.toml",
        "serving_05b.toml",
        "hotswap_135m.toml",
        "hotswap_05b.toml",
        "serving_llama8b.toml",
        "inductor_hotswap.toml",
    }
    scenarios = load_scenarios([SCENARIOS, *examples])
    by_name = {s.name: s for s in scenarios}
    assert {"serving", "serving-small", "serving-gpu-llama8b"} <= set(by_name)
    assert len(expand(by_name["serving"])) == 5 and len(expand(by_name["serving-small"])) == 5
    # The realistic sizes (reports/performance/realistic_sizes.md): each shape runs a hotswap and a serving
    # scenario, the same question as the shipped tiny one.
    realistic = {"hotswap-135m": "smollm2-135m", "hotswap-05b": "qwen2.5-0.5b", "serving-05b": "qwen2.5-0.5b"}
    for name, shape in realistic.items():
        assert by_name[name].model == f"builtin:{shape}-shape"
    assert len(expand(by_name["serving-05b"])) == 5 and len(expand(by_name["hotswap-135m"])) == 1
    assert [s.op for s in by_name["hotswap-05b"].steps] == [s.op for s in by_name["hotswap-peft"].steps]


def test_minimal_scenario_defaults(write_scenario):
    s = load_scenario(write_scenario(MINIMAL))
    assert s.matrix.precision == ("fp32",)
    assert [c.label for c in s.matrix.compile] == ["aot_eager"]
    assert s.steps[0].name == "a"  # load_adapter's adapter_name defaults to the adapter key
    assert s.workload.kind == "forward" and s.timing.min_rounds >= 1


def _error(write_scenario, text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(text))
    return str(info.value)


def _replace(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (_replace('name = "minimal"', 'name = "minimal'), ["TOML syntax error", "line"]),
        (_replace("rank = 4", 'rank = "four"'), ["adapters.a.rank", "expected an integer", "'four'"]),
        (_replace("rank = 4", "rnak = 4"), ["adapters.a.rnak", "unknown key", "did you mean 'rank'"]),
        # A typo of a required key names the typo, not only the key it left missing (issue 32).
        (
            _replace('model = "builtin:tiny-llama"', 'modle = "builtin:tiny-llama"'),
            ["scenario.modle", "unknown key", "did you mean 'model'", "scenario.model", "required"],
        ),
        (
            _replace('op = "forward"', 'op = "forwrad"'),
            ["step 3.op", "unknown op 'forwrad'", "did you mean 'forward'"],
        ),
        (
            _replace('compile = ["aot_eager"]', 'compile = ["aot_eagre"]'),
            ["matrix.compile[0]", "did you mean 'aot_eager'"],
        ),
        (
            _replace("[matrix]", '[matrix]\nprecision = ["fp64"]'),
            ["matrix.precision[0]", "unknown precision 'fp64'"],
        ),
        (_replace('model = "builtin:tiny-llama"\n', ""), ["scenario.model", "required field is missing"]),
        (_replace("rank = 4", "rank = -1"), ["adapters.a.rank", "between 1 and"]),
        (
            _replace('adapter = "a"', 'adapter = "b"'),
            ["step 1 (load_adapter).adapter", "not defined", "defined: a"],
        ),
        (_replace("[matrix]", "[matrix]\nprecision = []"), ["matrix.precision", "empty axis"]),
        (
            _replace("[matrix]", "[workload]\nnew_tokens = 0\n[matrix]"),
            ["workload.new_tokens", "between 1 and"],
        ),
        (
            _replace("[matrix]", "[workload]\nbatch_size = 1000000\n[matrix]"),
            ["workload.batch_size", "between 1 and 4096"],
        ),
        (_replace('name = "minimal"', 'name = "../escape"'), ["scenario.name", "invalid name"]),
        (
            _replace('op = "forward"', 'op = "forward"\nexpect = { recompiles = "about zero" }'),
            ["step 3 (forward).expect.recompiles", "comparison"],
        ),
        (
            _replace('op = "forward"', 'op = "forward"\nadapter = "a"'),
            ["step 3 (forward).adapter", "unknown key for op 'forward'"],
        ),
        (
            MINIMAL + '\n[[steps]]\nop = "load_adapter"\nadapter = "a"\nhotswap = true\nname = "zzz"\n',
            ["step 4 (load_adapter)", "hotswap into 'zzz'", "no adapter of that name"],
        ),
        (
            MINIMAL + '\n[[steps]]\nop = "enable_hotswap"\ntarget_rank = 8\n',
            ["step 4 (enable_hotswap)", "before the first adapter is loaded"],
        ),
        (
            MINIMAL + '\n[[steps]]\nop = "load_adapter"\nadapter = "a"\n',
            ["step 4 (load_adapter)", "already loaded"],
        ),
        (
            MINIMAL + '\n[[steps]]\nop = "set_adapter"\nnames = ["nope"]\n',
            ["step 4 (set_adapter)", "nope", "not loaded"],
        ),
        (
            MINIMAL + '\n[[steps]]\nop = "delete_adapter"\nname = "nope"\n',
            ["step 4 (delete_adapter)", "not loaded"],
        ),
        (MINIMAL + '\n[[steps]]\nop = "compile"\n', ["step 4 (compile)", "already compiled"]),
        (
            _replace('compile = ["aot_eager"]', 'compile = ["none"]'),
            ["step 2 (compile)", "needs a compile backend"],
        ),
        (
            _replace('compile = ["aot_eager"]', 'compile = ["eager", "eager"]'),
            ["matrix.compile", "duplicate"],
        ),
        (
            MINIMAL
            + '\n[[steps]]\nop = "forward"\nknown_failure = { expectation = "recompiles", reason = "" }\n',
            ["step 4 (forward).known_failure.reason", "must say why"],
        ),
        (
            MINIMAL
            + '\n[[steps]]\nop = "forward"\nknown_failure = { expectation = "recompiles", reason = "x", when = { precision = ["bf16"] } }\n',
            ["step 4 (forward)", "not a value of the matrix"],
        ),
        ('[scenario]\nname = "x"\nmodel = "m"\n', ["steps", "required field is missing"]),
        ('steps = []\n[scenario]\nname = "x"\nmodel = "m"\n', ["steps", "at least one step"]),
        ('[scenrio]\nname = "x"\n', ["scenario", "required table is missing"]),
    ],
)
def test_validation_errors(write_scenario, text, fragments):
    message = _error(write_scenario, text)
    assert "scenario.toml" in message  # the file is always named
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[scenario]\nname = "caf\xe9"\n')
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(path)


def test_directory_without_scenarios(tmp_path):
    with pytest.raises(ScenarioError, match="no scenario file"):
        discover([tmp_path])


def test_missing_path(tmp_path):
    with pytest.raises(ScenarioError, match="no such file or directory"):
        discover([tmp_path / "nope.toml"])


def test_duplicate_scenario_names(write_scenario):
    a = write_scenario(MINIMAL, "a.toml")
    b = write_scenario(MINIMAL, "b.toml")
    with pytest.raises(ScenarioError, match="duplicate scenario name 'minimal'"):
        load_scenarios([a, b])


def test_strict_comparisons():
    from bench.spec.counts import CountBound

    assert CountBound.parse("== 0").allows_zero_only
    assert CountBound.parse("<= 0").allows_zero_only
    assert CountBound.parse("< 1").allows_zero_only
    assert not CountBound.parse(">= 0").allows_zero_only
    assert not CountBound.parse("<= 2").allows_zero_only
    assert CountBound.parse(">= 1").holds(3) and not CountBound.parse(">= 1").holds(0)
