"""Adapter configs the math oracle read wrongly, each then blaming the library ("the library's reference
disagrees with the math") though peft and transformers agreed with each other; each against the library's
own load of the same files, with a control the oracle always read right.

- IA3 on a layer with a bias: peft rescales the bias with the output, (W x + b) * l. Every built-in model's
  biases are 0, so only a model with real biases (every Qwen2 checkpoint has them) tells;
- AdaLoRA with lora_alpha 0: peft falls back to the rank the layers were built with (init_r), not r;
- fan_in_fan_out set on nn.Linear targets: peft overrides it (a warning) and does not transpose; a non-square
  target made the oracle itself crash, and the case read as "reference could not be built";
- exclude_modules: an excluded module has no LoRA, and the oracle called the file incomplete (unverified);
- init_lora_weights that rewrite the base on load (pissa, olora, corda, loftq): the oracle cannot know the
  rewritten base, so such an adapter is unverified with the reason, not a failure blamed on the library.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.engine.math_oracle import MathOracle, compare_oracles
from bench.engine.model import make_inputs
from bench.engine.reference import ReferenceOracle
from bench.engine.sources.adapters import resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.errors import BenchInputError
from bench.spec.schema import AdapterSpec, Workload
from bench.spec.state import AdapterState, Slot

WORKLOAD = Workload(kind="forward", batch_size=2, seq_len=16)


def _state(key: str) -> AdapterState:
    return AdapterState(slots=(Slot("a", key, False),), active=("a",))


def _agree(model: str, adapters: dict[str, str], key: str):
    """(agreement, the adapter's effect on the math's output) for one loaded adapter."""
    inputs = make_inputs(WORKLOAD, 1000, "cpu")
    library = ReferenceOracle(model, "fp32", "cpu", inputs, WORKLOAD, adapters, {})
    math = MathOracle(model, "fp32", "cpu", inputs, WORKLOAD, adapters)
    got = math.logits(_state(key))
    effect = float((got - math.logits(AdapterState())).abs().max())
    return compare_oracles(library.logits(_state(key)), got, "fp32"), effect


def _random_weights(model, seed: int, std: float = 0.3) -> None:
    """Every adapter parameter of a peft model drawn at random (its default init leaves B or l trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("lora_", "ia3_l")):
                base = 1.0 if "ia3_l" in name else 0.0
                p.copy_(base + std * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def biased_qwen2(cache_root, tmp_path_factory) -> str:
    """The built-in tiny Qwen2 with random biases on q/k/v (a real Qwen2 has them), saved as a model folder."""
    from transformers import AutoModelForCausalLM

    src = resolve_model("builtin:tiny-qwen2", cache_root).location
    model = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    out = tmp_path_factory.mktemp("qwen2-bias") / "model"
    model.save_pretrained(out)
    for extra in ("generation_config.json",):
        if (Path(src) / extra).is_file():
            shutil.copy(Path(src) / extra, out / extra)
    return str(out)


def _ia3(model_location: str, out: Path, targets, feedforward) -> str:
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_location)
    peft_model = get_peft_model(
        base, IA3Config(target_modules=list(targets), feedforward_modules=list(feedforward))
    )
    _random_weights(peft_model, seed=3)
    peft_model.save_pretrained(out)
    return str(out)


def test_ia3_rescales_a_biased_output_with_its_bias(biased_qwen2, tmp_path):
    folder = _ia3(biased_qwen2, tmp_path / "ia3", ("k_proj", "v_proj", "down_proj"), ("down_proj",))
    agreement, effect = _agree(biased_qwen2, {"ia3": folder}, "ia3")
    assert agreement.agree, agreement  # was max abs diff 0.196: the bias left unscaled
    assert effect > 100 * agreement.bound


def test_control_ia3_on_bias_free_layers(cache_root, tmp_path):
    location = resolve_model("builtin:tiny-qwen2", cache_root).location  # biases all 0
    folder = _ia3(location, tmp_path / "ia3", ("k_proj", "v_proj", "down_proj"), ("down_proj",))
    agreement, effect = _agree(location, {"ia3": folder}, "ia3")
    assert agreement.agree and effect > 100 * agreement.bound


@pytest.mark.parametrize(("alpha", "init_r"), [(0, 4), (0, 8), (16, 4)])
def test_adalora_scaling_falls_back_to_the_built_rank(cache_root, tmp_path, alpha, init_r):
    """lora_alpha 0 with init_r 4 of r 8 read 2x too large (0.0635); the other two are the controls."""
    from peft import AdaLoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    location = resolve_model("builtin:tiny-llama", cache_root).location
    config = AdaLoraConfig(
        r=8, init_r=init_r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], total_step=10
    )
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(location), config)
    _random_weights(peft_model, seed=4)
    peft_model.save_pretrained(tmp_path / "ada")
    agreement, effect = _agree(location, {"ada": str(tmp_path / "ada")}, "ada")
    assert agreement.agree, agreement
    assert effect > 100 * agreement.bound


@pytest.fixture(scope="module")
def lora(cache_root):
    """A plain LoRA on q_proj, o_proj (square) and up_proj (64 -> 128: a transpose cannot fit)."""
    model = resolve_model("builtin:tiny-llama", cache_root)
    spec = AdapterSpec(key="second", rank=8, alpha=16.0, targets=("q_proj", "o_proj", "up_proj"), seed=2)
    return model.location, resolve_adapter(spec, model, cache_root).location


def _edited(src: str, dst: Path, **config_changes) -> str:
    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text())
    config.update(config_changes)
    (dst / "adapter_config.json").write_text(json.dumps(config))
    return str(dst)


def test_fan_in_fan_out_on_linear_targets_is_not_a_transpose(lora, tmp_path):
    model, folder = lora
    flagged = _edited(folder, tmp_path / "ffio", fan_in_fan_out=True)
    agreement, effect = _agree(model, {"ffio": flagged}, "ffio")
    assert agreement.agree, agreement  # was a RuntimeError (up_proj), or 0.79 on square targets alone
    assert effect > 100 * agreement.bound
    control, _ = _agree(model, {"plain": folder}, "plain")
    assert control.agree and control.max_abs_diff == agreement.max_abs_diff  # the same delta either way


def test_an_excluded_module_is_no_target(lora, tmp_path):
    model, folder = lora
    excluded = "model.layers.0.self_attn.q_proj"
    dst = Path(_edited(folder, tmp_path / "excl", exclude_modules=[excluded]))
    weights = load_file(dst / "adapter_model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if f".{excluded}." not in k}, dst / "adapter_model.safetensors"
    )
    agreement, effect = _agree(model, {"excl": str(dst)}, "excl")
    assert agreement.agree, agreement  # was "missing key: ... is targeted but the file has no lora_A"
    assert effect > 100 * agreement.bound
    # Control: the same file without the exclusion is incomplete, and said so.
    incomplete = _edited(str(dst), tmp_path / "incomplete", exclude_modules=None)
    with pytest.raises(BenchInputError) as info:
        _agree(model, {"inc": incomplete}, "inc")
    assert excluded in str(info.value)


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4", "olora", "corda", "loftq"])
def test_an_init_that_rewrites_the_base_is_named_not_blamed_on_the_library(lora, tmp_path, init):
    model, folder = lora
    rewriting = _edited(folder, tmp_path / init, init_lora_weights=init)
    inputs = make_inputs(WORKLOAD, 1000, "cpu")
    math = MathOracle(model, "fp32", "cpu", inputs, WORKLOAD, {"x": rewriting})
    with pytest.raises(BenchInputError) as info:
        math.logits(_state("x"))
    assert info.value.field == "init_lora_weights" and "rewrites the base weights" in str(info.value)


@pytest.mark.parametrize("init", [True, "gaussian", "orthogonal", "eva"])
def test_control_inits_the_file_overrides_are_read(lora, tmp_path, init):
    model, folder = lora
    agreement, _ = _agree(model, {"x": _edited(folder, tmp_path / "x", init_lora_weights=init)}, "x")
    assert agreement.agree, agreement
