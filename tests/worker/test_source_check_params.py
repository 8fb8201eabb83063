"""The pre-run fit check (bench/worker/source_check.py) reads LoRA-on-Parameter keys, whose module names carry
one `.base_layer` per nested ParamWrapper: an adapter on tiny-moe's experts fits tiny-moe, and the same file
against tiny-llama (no experts module) is named as made for another model."""

from __future__ import annotations

from bench.engine.sources.adapters import resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.spec.schema import AdapterSpec
from bench.worker.source_check import lora_misfits

SPEC = AdapterSpec(
    key="experts",
    rank=4,
    alpha=8.0,
    targets=("q_proj",),
    target_parameters=("mlp.experts.gate_up_proj", "mlp.experts.down_proj"),
    seed=5,
)


def test_nested_parameter_keys_fit_their_model_and_not_another(cache_root):
    from transformers import AutoModelForCausalLM

    moe = resolve_model("builtin:tiny-moe", cache_root)
    location = resolve_adapter(SPEC, moe, cache_root).location
    assert lora_misfits(AutoModelForCausalLM.from_pretrained(moe.location), location) == []
    llama = AutoModelForCausalLM.from_pretrained(resolve_model("builtin:tiny-llama", cache_root).location)
    problems = set(lora_misfits(llama, location))
    assert {f"model.layers.{i}.mlp.experts is not a module of this model" for i in (0, 1)} <= problems
