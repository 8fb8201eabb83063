"""The catalogue's LoRA-on-embeddings scenarios (scenarios/lora_embeddings.toml, lora_embeddings_saved_base.toml)
catch their class of bug, through run_case.

Planted: a hotswap that leaves the embedding LoRA weights of the old adapter in place (only the subject is
wrong: the fresh reference sees it), and an embedding LoRA scaled twice inside peft's Embedding layer (the
subject and the library reference share it: only the math oracle sees it). The same cases unplanted keep their
shipped verdicts (docs/bug-catalogue.md). Also the adapter spec's save_embedding_layers: a value that is no
boolean, or the field on an IA3 adapter, is refused by name; a boolean reaches the spec. And the finding on
peft's own API: hotswap_adapter on a PeftModel fails on both kinds of embedding file and swaps a q/v adapter.
"""

from __future__ import annotations

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from bench.worker.execute import run_case
from tests.catalogue import failed_outcomes, planted_failures, shipped_case
from tests.scenarios import LOAD_A, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

MAIN = "lora_embeddings.toml"
SAVED_BASE = "lora_embeddings_saved_base.toml"
TRANSFORMERS = "lora-embeddings[fp32-aot_eager-transformers]"
PEFT = "lora-embeddings[fp32-aot_eager-peft]"


def _plant_swap_skips_embeddings(monkeypatch) -> None:
    """transformers' load_adapter(hotswap=True) swaps every LoRA weight but the embedding's."""
    import torch
    from transformers.integrations.peft import PeftAdapterMixin

    original = PeftAdapterMixin.load_adapter

    def planted(self, *args, **kwargs):
        if not kwargs.get("hotswap"):
            return original(self, *args, **kwargs)
        name = kwargs.get("adapter_name")
        layers = [m for m in self.modules() if hasattr(m, "lora_embedding_A") and name in m.lora_embedding_A]
        old = [
            (m, m.lora_embedding_A[name].detach().clone(), m.lora_embedding_B[name].detach().clone())
            for m in layers
        ]
        out = original(self, *args, **kwargs)
        with torch.no_grad():
            for m, a, b in old:
                m.lora_embedding_A[name].copy_(a)
                m.lora_embedding_B[name].copy_(b)
        return out

    monkeypatch.setattr(PeftAdapterMixin, "load_adapter", planted)


def _plant_embedding_scaled_twice(monkeypatch) -> None:
    """peft's LoRA Embedding layer adds twice its delta (subject and library reference alike)."""
    from peft.tuners.lora.layer import Embedding

    original = Embedding.update_layer

    def planted(self, adapter_name, *args, **kwargs):
        out = original(self, adapter_name, *args, **kwargs)
        self.scaling[adapter_name] *= 2
        return out

    monkeypatch.setattr(Embedding, "update_layer", planted)


PLANTED = {
    "swap-skips-embedding": (MAIN, TRANSFORMERS, _plant_swap_skips_embeddings),
    "embedding-scaled-twice": (MAIN, PEFT, _plant_embedding_scaled_twice),
}
# (step, expectation) each planted bug must fail, beyond the verdict.
BROKEN = {
    "swap-skips-embedding": (11, "matches_reference"),
    "embedding-scaled-twice": (2, "oracles_agree"),
}
# The shipped verdicts (docs/bug-catalogue.md): every case meets a known failure of the pinned versions.
CONTROL = {
    (MAIN, TRANSFORMERS): "xfail",
    (MAIN, PEFT): "xfail",
    (SAVED_BASE, "lora-embeddings-saved-base[fp32-aot_eager-transformers]"): "xfail",
    (SAVED_BASE, "lora-embeddings-saved-base[fp32-aot_eager-peft]"): "xfail",
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_planted_embedding_bug_fails_the_scenario(kind, cache_root, monkeypatch):
    failed = planted_failures(PLANTED[kind], cache_root, monkeypatch)
    assert BROKEN[kind] in failed, failed


@pytest.mark.parametrize(("file_name", "case_id"), sorted(CONTROL))
def test_unplanted_each_case_keeps_its_shipped_verdict(file_name, case_id, cache_root):
    r = run_case(shipped_case(file_name, case_id), cache_root)
    assert r.verdict == CONTROL[(file_name, case_id)], (r.verdict, r.reason)
    assert failed_outcomes(r) == []


# ----- the spec field the lean file needs


@pytest.mark.parametrize(
    ("adapter", "field", "why"),
    [
        ({"rank": 4, "save_embedding_layers": "no"}, "save_embedding_layers", ""),
        ({"type": "ia3", "save_embedding_layers": False}, "save_embedding_layers", "not an IA3 field"),
    ],
)
def test_a_bad_save_embedding_layers_is_refused_by_name(adapter, field, why, write_scenario):
    path = write_scenario(scenario_toml("s", [LOAD_A, "forward"], adapters={"a": adapter}))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert field in str(err.value) and why in str(err.value), err.value


def test_save_embedding_layers_reaches_the_spec(write_scenario):
    """The control: a boolean is accepted, and the default keeps peft's default save."""
    adapters = {"a": {"rank": 4, "save_embedding_layers": False}, "b": {"rank": 4}}
    s = load_scenario(write_scenario(scenario_toml("s", [LOAD_A, "forward"], adapters=adapters)))
    assert (s.adapter("a").save_embedding_layers, s.adapter("b").save_embedding_layers) == (False, True)


# ----- the finding, on peft's own PeftModel API (no suite code in the swap)


@pytest.mark.parametrize(
    ("first", "second", "error"),
    [
        (
            "emb_lean_a",
            "emb_lean_b",
            (AttributeError, "scaling"),
        ),  # the embedding key: 'LlamaModel' has no 'scaling'
        (
            "emb_a",
            "emb_b",
            (KeyError, "base_layer.weight"),
        ),  # the saved base weight: 'base_model.model.lm_head.base_layer.weight'
        ("qv_a", "qv_b", None),  # control: the same call swaps a q/v adapter
    ],
)
def test_peft_s_own_hotswap_adapter_fails_alike_on_a_peft_model(first, second, error, cache_root):
    import torch
    from peft import PeftModel
    from peft.utils.hotswap import hotswap_adapter

    from bench.engine.model import load_model
    from bench.engine.sources.adapters import resolve_adapter
    from bench.engine.sources.models import resolve_model
    from bench.spec.schema import AdapterSpec

    model = resolve_model("builtin:tiny-llama", cache_root)
    targets = ("q_proj", "v_proj") if first.startswith("qv") else ("embed_tokens", "lm_head", "q_proj")
    lean = "lean" in first
    locations = [
        resolve_adapter(
            AdapterSpec(
                key=k,
                rank=4,
                alpha=8.0,
                targets=targets,
                seed=i,
                init_std=0.1,
                save_embedding_layers=not lean,
            ),
            model,
            cache_root,
        ).location
        for i, k in enumerate((first, second), 40)
    ]
    peft_model = PeftModel.from_pretrained(load_model(model.location, "fp32", "cpu"), locations[0])
    if error is not None:
        with pytest.raises(error[0], match=error[1]):
            hotswap_adapter(peft_model, locations[1], adapter_name="default", torch_device="cpu")
        return
    expected = PeftModel.from_pretrained(load_model(model.location, "fp32", "cpu"), locations[1])
    hotswap_adapter(peft_model, locations[1], adapter_name="default", torch_device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(peft_model(ids).logits, expected(ids).logits, atol=1e-5)
