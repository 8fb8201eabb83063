"""The math oracle's LoRA on nn.Parameters (target_parameters, bench/engine/oracle_params.py) against peft.

On the built-in mixture of experts (tiny-moe: fused 3-D expert Parameters) the oracle's logits agree with the
library's fresh load of the same saved adapters, and the adapters move the output far beyond the bound. On a
small module with a transposed 3-D Parameter and a 2-D one, the oracle's delta equals peft's own
ParamWrapper.get_delta_weight. Negative controls: a layout bug planted in the oracle (B's expert columns read
as blocks, only the first expert updated) fails the agreement; an expert permutation planted in peft's
ParamWrapper moves the library's subject and reference alike and is caught by the math; corrupt files and
configs the rules do not cover are BenchInputErrors naming the file and the key or field.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.engine import oracle_params
from bench.engine.math_oracle import MathOracle, compare_oracles
from bench.engine.model import make_inputs
from bench.engine.oracle_params import ParamLora, read_param_loras
from bench.engine.reference import ReferenceOracle
from bench.engine.sources.adapters import peft_config, resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.errors import BenchInputError
from bench.spec.schema import AdapterSpec, Workload
from bench.spec.state import AdapterState, Slot

WORKLOAD = Workload(kind="forward", batch_size=2, seq_len=16)
EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
SPECS = {
    "both": AdapterSpec(
        key="both", rank=4, alpha=8.0, targets=(), target_parameters=EXPERTS, seed=11, init_std=0.1
    ),
    # one parameter per module (no nesting) beside an ordinary module target
    "down_and_q": AdapterSpec(
        key="down_and_q",
        rank=2,
        alpha=6.0,
        targets=("q_proj",),
        target_parameters=("experts.down_proj",),
        seed=12,
        init_std=0.1,
    ),
    "other": AdapterSpec(
        key="other", rank=4, alpha=2.0, targets=(), target_parameters=EXPERTS, seed=13, init_std=0.1
    ),
}


@pytest.fixture(scope="module")
def moe(cache_root, tmp_path_factory):
    model = resolve_model("builtin:tiny-moe", cache_root)
    adapters = {k: resolve_adapter(s, model, cache_root).location for k, s in SPECS.items()}
    rslora = tmp_path_factory.mktemp("rslora") / "rslora"
    shutil.copytree(adapters["both"], rslora)
    config = json.loads((rslora / "adapter_config.json").read_text())
    config["use_rslora"] = True
    (rslora / "adapter_config.json").write_text(json.dumps(config))
    adapters["rslora"] = str(rslora)
    return model.location, adapters


def _oracles(moe):
    location, adapters = moe
    inputs = make_inputs(WORKLOAD, 1000, "cpu")
    configs = {k: peft_config(s) for k, s in SPECS.items()}
    library = ReferenceOracle(location, "fp32", "cpu", inputs, WORKLOAD, adapters, configs)
    return library, MathOracle(location, "fp32", "cpu", inputs, WORKLOAD, adapters)


def _state(*keys, enabled=True) -> AdapterState:
    slots = tuple(Slot(f"s{i}", k, False) for i, k in enumerate(keys))
    return AdapterState(slots=slots, active=tuple(s.name for s in slots), enabled=enabled)


STATES = {
    "gate_up + down (nested)": ("both",),
    "down alone beside q_proj": ("down_and_q",),
    "use_rslora": ("rslora",),
    "two active": ("both", "other"),
}


@pytest.mark.parametrize("name", sorted(STATES))
def test_the_math_agrees_with_peft_on_the_experts(moe, name):
    library, math = _oracles(moe)
    state = _state(*STATES[name])
    lib, mine = library.logits(state), math.logits(state)
    agreement = compare_oracles(lib, mine, "fp32")
    base = library.logits(_state())
    effect = float((lib - base).abs().max())
    print(
        f"{name}: |library - math| {agreement.max_abs_diff:.3g}, bound {agreement.bound:.3g}, effect {effect:.3g}"
    )
    assert agreement.agree, agreement
    assert effect > 100 * agreement.bound  # an oracle that ignored the experts' LoRA could not pass


def test_disabled_gives_the_base(moe):
    library, math = _oracles(moe)
    assert compare_oracles(library.logits(_state()), math.logits(_state("both", enabled=False)), "fp32").agree


# ----- negative controls: bugs planted in the oracle, then in peft


def _blocked_b(self):
    """B's expert columns read as blocks (e r .. (e + 1) r), as A's rows are: the wrong layout."""
    if self.experts == 1:
        return self.scaling * (self.B @ self.A)
    a = self.A.reshape(self.experts, self.rank, -1)
    b = self.B.reshape(self.B.shape[0], self.experts, self.rank).permute(1, 0, 2)
    delta = self.scaling * torch.bmm(b, a)
    return delta.transpose(1, 2) if self.transposed else delta


def _first_expert_only(self, original=ParamLora.delta):
    delta = original(self)
    if self.experts > 1:
        delta[1:] = 0
    return delta


@pytest.mark.parametrize("plant", [_blocked_b, _first_expert_only])
def test_a_layout_bug_in_the_oracle_fails_the_agreement(moe, monkeypatch, plant):
    monkeypatch.setattr(ParamLora, "delta", plant)
    library, math = _oracles(moe)
    state = _state("both")
    assert not compare_oracles(library.logits(state), math.logits(state), "fp32").agree


def test_a_peft_bug_shared_by_subject_and_reference_is_caught_by_the_math(moe, monkeypatch):
    """peft's ParamWrapper planted to apply each expert's LoRA to the next expert (both library models share it)."""
    from peft.tuners.lora.layer import ParamWrapper

    original = ParamWrapper.get_delta_factors

    def rolled(self, adapter_name):
        lhs, rhs, scaling = original(self, adapter_name)
        return lhs.roll(1, dims=0), rhs.roll(1, dims=0), scaling

    monkeypatch.setattr(ParamWrapper, "get_delta_factors", rolled)
    library, math = _oracles(moe)
    state = _state("both")
    assert not compare_oracles(library.logits(state), math.logits(state), "fp32").agree


# ----- the delta itself against peft's, on both 3-D layouts and a 2-D parameter


class _Experts(torch.nn.Module):
    def __init__(self, transposed: bool):
        super().__init__()
        self.is_transposed = transposed
        shape = (3, 5, 7) if transposed else (3, 7, 5)  # 3 experts, in 5, out 7
        self.fused = torch.nn.Parameter(torch.randn(shape))
        self.plain = torch.nn.Parameter(torch.randn(7, 5))  # 2-D: (out, in)

    def forward(self, x):
        return x


@pytest.mark.parametrize("transposed", [False, True])
def test_the_delta_equals_peft_s_own(tmp_path, transposed):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    root = torch.nn.Module()
    root.block = _Experts(transposed)
    config = LoraConfig(
        r=2, lora_alpha=3, target_modules=[], target_parameters=["block.fused", "block.plain"]
    )
    model = get_peft_model(root, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape))
    model.save_pretrained(tmp_path)
    plain = {"block": _Experts(transposed)}
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    mine = {
        (p.param): p.delta() for p in read_param_loras(cfg, plain, tmp_path / "adapter_model.safetensors")
    }
    from peft.tuners.lora.layer import ParamWrapper

    theirs = {
        m.parameter_name: m.get_delta_weight("default")
        for m in model.modules()
        if isinstance(m, ParamWrapper)
    }
    assert set(mine) == set(theirs) == {"fused", "plain"}
    for name in mine:
        assert mine[name].shape == getattr(plain["block"], name).shape
        torch.testing.assert_close(mine[name], theirs[name].float(), rtol=1e-6, atol=1e-6)


# ----- files and configs the rules do not cover


def _copy(moe, tmp_path, key="both"):
    folder = tmp_path / key
    shutil.copytree(moe[1][key], folder)
    return folder


def _math_error(moe, folder) -> BenchInputError:
    _, math = _oracles(moe)
    math.adapter_locations = {"bad": str(folder)}
    with pytest.raises(BenchInputError) as info:
        math.logits(_state("bad"))
    return info.value


def test_a_missing_expert_weight_names_the_file_and_key(moe, tmp_path):
    folder = _copy(moe, tmp_path)
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    key = "base_model.model.model.layers.1.mlp.experts.base_layer.lora_B.weight"
    del tensors[key]
    save_file(tensors, path)
    error = _math_error(moe, folder)
    assert (error.source, error.field) == (str(path), key)
    assert "gate_up_proj" in str(error)


def test_patterns_beside_target_parameters_are_named(moe, tmp_path):
    folder = _copy(moe, tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "rank_pattern": {"down_proj": 2}}))
    error = _math_error(moe, folder)
    assert (error.source, error.field) == (str(folder / "adapter_config.json"), "rank_pattern")


def test_expert_keys_a_config_does_not_target_are_unknown(moe, tmp_path):
    folder = _copy(moe, tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["target_parameters"] = ["mlp.experts.no_such"]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    error = _math_error(moe, folder)
    assert error.source == str(folder / "adapter_model.safetensors")
    assert error.field == "base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight"
    assert "unknown key" in str(error)


def test_the_saved_keys_follow_the_nesting(moe):
    """gate_up_proj is registered first, so it is wrapped innermost: its keys carry one `.base_layer`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(moe[0])
    keys = oracle_params.parameter_targets({"target_parameters": list(EXPERTS)}, dict(model.named_modules()))
    saved = set(load_file(f"{moe[1]['both']}/adapter_model.safetensors"))
    assert set(keys) == saved
    inner = "base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight"
    assert keys[inner] == ("model.layers.0.mlp.experts", "gate_up_proj", "A")
