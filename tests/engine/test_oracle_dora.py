"""DoRA in the math oracle (bench/engine/oracle_dora.py) against peft's own DoRA layers, on adapters the suite builds.

The library side here is peft's own loader (PeftModel.from_pretrained), not transformers' load_adapter: on the
pinned versions the latter drops the magnitude vector (docs/bug-catalogue.md), which is what the math oracle is
there to catch. Negative controls: an oracle that ignores the magnitude, and one that takes the norm per input
column instead of per output row, both disagree with peft; the builder's magnitude is not the row norm (so a
library that ignored it would be seen); corrupted magnitudes are named by file and key.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.engine import math_oracle
from bench.engine.math_oracle import ORACLE_RTOL, MathOracle, MathOracleError, compare_oracles
from bench.engine.model import make_inputs
from bench.engine.sources.adapters import resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.errors import BenchInputError
from bench.spec.schema import AdapterSpec, Workload
from bench.spec.state import AdapterState, Slot

WORKLOAD = Workload(kind="forward", batch_size=2, seq_len=16)
SPECS = {
    "tiny-llama": {
        "dora": AdapterSpec(
            key="dora",
            rank=4,
            alpha=8.0,
            targets=("q_proj", "v_proj", "down_proj"),
            seed=11,
            init_std=0.1,
            use_dora=True,
        ),
        "lora": AdapterSpec(
            key="lora", rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"), seed=11, init_std=0.1
        ),
        "other": AdapterSpec(key="other", rank=4, alpha=8.0, targets=("q_proj",), seed=12, use_dora=True),
    },
    # GPT-2's Conv1D stores (in, out): peft transposes (fan_in_fan_out) before the row norm
    "tiny-gpt2": {
        "conv": AdapterSpec(
            key="conv", rank=4, alpha=8.0, targets=("c_attn", "c_proj"), seed=13, init_std=0.1, use_dora=True
        ),
    },
}
CASES = [("tiny-llama", "dora", "fp32"), ("tiny-llama", "dora", "bf16"), ("tiny-gpt2", "conv", "fp32")]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@pytest.fixture(scope="module")
def world(cache_root):
    out = {}
    for model_name, specs in SPECS.items():
        model = resolve_model(f"builtin:{model_name}", cache_root)
        for key, spec in specs.items():
            out[key] = (model.location, resolve_adapter(spec, model, cache_root).location)
    return out


def _state(*keys: str) -> AdapterState:
    slots = tuple(Slot(k, k, False) for k in keys)
    return AdapterState(slots=slots, active=tuple(keys), enabled=True)


def _math(world, key, precision="fp32", locations=None):
    base, _ = world[key]
    inputs = make_inputs(WORKLOAD, 1000, "cpu")
    return MathOracle(
        base, precision, "cpu", inputs, WORKLOAD, locations or {k: v[1] for k, v in world.items()}
    )


def _peft_logits(world, key, precision="fp32"):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, folder = world[key]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=DTYPES[precision])
    model = PeftModel.from_pretrained(model, folder).eval()
    with torch.no_grad():
        return model(**make_inputs(WORKLOAD, 1000, "cpu").as_kwargs()).logits.float()


@pytest.mark.parametrize(("model_name", "key", "precision"), CASES)
def test_the_oracle_agrees_with_peft_dora(world, model_name, key, precision):
    math = _math(world, key, precision)
    got = compare_oracles(_peft_logits(world, key, precision), math.logits(_state(key)), precision)
    print(f"{model_name} {precision}: max|peft - math| / scale = {got.max_abs_diff / got.scale:.2e}")
    assert got.agree, got


def _plain_lora(weight, lora, *, transposed):
    return weight.float() + math_oracle.lora_delta(weight, lora, transposed=transposed)


def _column_norm(weight, lora, *, transposed):
    w = weight.float().T if transposed else weight.float()
    merged = w + lora.scaling * (lora.B @ lora.A)
    out = merged * (lora.magnitude.view(-1, 1) / torch.linalg.vector_norm(merged, dim=0, keepdim=True))
    return out.T if transposed else out


@pytest.mark.parametrize("planted", [_plain_lora, _column_norm], ids=["magnitude ignored", "norm per column"])
@pytest.mark.parametrize(("model_name", "key"), [("tiny-llama", "dora"), ("tiny-gpt2", "conv")])
def test_a_wrong_dora_oracle_disagrees_with_peft(world, monkeypatch, planted, model_name, key):
    monkeypatch.setattr(math_oracle, "dora_weight", planted)
    got = compare_oracles(_peft_logits(world, key), _math(world, key).logits(_state(key)), "fp32")
    assert not got.agree
    assert got.max_abs_diff > 20 * got.bound, got  # far outside the bound, not at its edge


def test_the_built_magnitude_is_not_the_row_norm(world):
    """A magnitude equal to ||W + s B A||_row makes DoRA plain LoRA: the builder's differs by its seeded noise."""
    from transformers import AutoModelForCausalLM

    base, folder = world["dora"]
    tensors = load_file(f"{folder}/adapter_model.safetensors")
    weights = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).state_dict()
    module = "model.layers.0.self_attn.q_proj"
    a, b = (
        tensors[f"base_model.model.{module}.lora_A.weight"],
        tensors[f"base_model.model.{module}.lora_B.weight"],
    )
    norm = torch.linalg.vector_norm(weights[f"{module}.weight"] + 2.0 * (b @ a), dim=1)
    ratio = tensors[f"base_model.model.{module}.lora_magnitude_vector"] / norm
    assert 0.03 < float((ratio - 1).abs().mean()) < 0.2  # init_std 0.1: |N(0, 0.1)| averages 0.08
    # and DoRA moves the output beyond plain LoRA's with the same A and B (the magnitude matters)
    dora, lora = _math(world, "dora").logits(_state("dora")), _math(world, "lora").logits(_state("lora"))
    assert float((dora - lora).abs().max()) > 100 * ORACLE_RTOL["fp32"] * max(1.0, float(lora.abs().max()))


def _corrupt(world, tmp_path, edit):
    folder = tmp_path / "bad"
    shutil.copytree(world["dora"][1], folder)
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})
    return folder, path


MAGNITUDE = "base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector"


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda t: t.pop(MAGNITUDE), "missing key: use_dora is set"),
        (lambda t: t.update({MAGNITUDE: t[MAGNITUDE][:-1]}), "has 64 output rows"),
    ],
    ids=["missing", "wrong shape"],
)
def test_a_bad_magnitude_names_file_and_key(world, tmp_path, edit, why):
    folder, path = _corrupt(world, tmp_path, edit)
    math = _math(world, "dora", locations={"bad": str(folder)})
    with pytest.raises(BenchInputError) as info:
        math.logits(_state("bad"))
    assert (info.value.source, info.value.field) == (str(path), MAGNITUDE)
    assert why in str(info.value)


def test_a_magnitude_without_use_dora_is_an_unknown_key(world, tmp_path):
    folder = tmp_path / "plain"
    shutil.copytree(world["lora"][1], folder)
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    tensors[MAGNITUDE] = torch.ones(64)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(BenchInputError, match="without use_dora") as info:
        _math(world, "lora", locations={"plain": str(folder)}).logits(_state("plain"))
    assert info.value.field == MAGNITUDE


def test_dora_beside_another_active_adapter_on_a_module_is_refused(world):
    """peft rescales the running output: the answer depends on the order, so the oracle says why it cannot."""
    math = _math(world, "dora")
    with pytest.raises(MathOracleError, match="holds a DoRA adapter and another active adapter"):
        math.logits(_state("dora", "other"))
    assert torch.isfinite(math.logits(_state("other"))).all()  # control: each alone is computed


def test_dora_on_a_quantized_base_is_refused_with_its_reason():
    from bench.engine.lora_files import AdapterWeights, LoraModule
    from bench.engine.oracle_dora import dora_conflict

    def one(magnitude):
        lora = LoraModule("q", torch.ones(1, 2), torch.ones(2, 1), 1, 1.0, 1.0, magnitude)
        return [AdapterWeights("x", (lora,), ())]

    assert "quantized base" in dora_conflict(one(torch.ones(2)), quantized=True)
    assert dora_conflict(one(torch.ones(2)), quantized=False) is None
    assert dora_conflict(one(None), quantized=True) is None  # plain LoRA is hooked on quantized layers
