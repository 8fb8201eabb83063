"""The adapter spec's `target_parameters` (LoRA on nn.Parameters): read, validated, and handed to peft's config.

Each bad value is a ScenarioError naming the file and the field; the control is the same adapter with a valid
value, which loads and reaches LoraConfig unchanged.
"""

from __future__ import annotations

import pytest

from bench.engine.sources.adapters import peft_config
from bench.errors import ScenarioError
from bench.scenario import load_scenario

BASE = """\
[scenario]
name = "moe"
model = "builtin:tiny-moe"

[adapters.a]
{fields}

[[steps]]
op = "load_adapter"
adapter = "a"
"""
EXPERTS = 'target_parameters = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]'


def _load(write_scenario, fields: str):
    return load_scenario(write_scenario(BASE.format(fields=fields)))


def test_target_parameters_reach_peft_s_config(write_scenario):
    spec = _load(write_scenario, f"rank = 4\n{EXPERTS}").adapters[0]
    assert spec.target_parameters == ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
    assert spec.targets == ()  # left out beside target_parameters: no module, as peft's LoraConfig
    config = peft_config(spec)
    assert sorted(config.target_parameters) == ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"]
    assert not config.target_modules


def test_modules_and_parameters_together(write_scenario):
    spec = _load(write_scenario, f'targets = ["q_proj"]\n{EXPERTS}').adapters[0]
    assert spec.targets == ("q_proj",) and len(spec.target_parameters) == 2


def test_without_target_parameters_the_default_targets_stay(write_scenario):
    spec = _load(write_scenario, "rank = 4").adapters[0]
    assert spec.target_parameters == () and spec.targets == ("q_proj", "v_proj")
    assert peft_config(spec).target_parameters is None


@pytest.mark.parametrize(
    ("fields", "field", "why"),
    [
        (
            'target_parameters = ["mlp.experts.down proj"]',
            "adapters.a.target_parameters[0]",
            "dotted parameter name",
        ),
        ('target_parameters = [""]', "adapters.a.target_parameters[0]", "dotted parameter name"),
        ('target_parameters = ["a.b", "a.b"]', "adapters.a.target_parameters[1]", "listed twice"),
        ("target_parameters = [3]", "adapters.a.target_parameters[0]", "expected a string"),
        (f"lora_dropout = 0.1\n{EXPERTS}", "adapters.a.lora_dropout", "must be 0 with target_parameters"),
        (f'type = "ia3"\n{EXPERTS}', "adapters.a.target_parameters", "not an IA3 field"),
        (
            f'type = "adalora"\n{EXPERTS}',
            "adapters.a.target_parameters",
            "adalora does not target parameters",
        ),
        ("targets = []", "adapters.a.targets", "needs at least one target module"),
    ],
)
def test_a_bad_value_names_the_file_and_field(write_scenario, fields, field, why):
    with pytest.raises(ScenarioError) as info:
        _load(write_scenario, fields)
    text = str(info.value)
    assert field in text and why in text and "scenario.toml" in text, text


def test_the_reproduction_script_builds_the_same_config(write_scenario):
    """The repro script's LoraConfig (bench/report/repro/assemble.py), executed, targets the same parameters as
    the suite's; an adapter without target_parameters gets none (its script text is unchanged)."""
    from bench.report.repro.assemble import _lora_configs

    experts = _load(write_scenario, f"rank = 4\n{EXPERTS}").adapters[0]
    plain = _load(write_scenario, "rank = 4").adapters[0]
    for spec in (experts, plain):
        namespace: dict = {}
        exec("from peft import LoraConfig\n" + "\n".join(_lora_configs((spec,))), namespace)
        built = namespace["LORA_CONFIGS"]["a"]()
        assert built.target_parameters == peft_config(spec).target_parameters
    assert "target_parameters" not in "\n".join(_lora_configs((plain,)))
