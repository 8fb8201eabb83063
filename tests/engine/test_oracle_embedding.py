"""LoRA on embed_tokens and lm_head in the math oracle (bench/engine/oracle_embedding.py) against peft's own output.

The adapters are built by the suite's builder (bench/engine/sources/adapters.py) and saved as a user's are:
peft's default save writes the base weights of embed_tokens and lm_head beside the LoRA; a `save_embedding_layers
= false` spec leaves them out. tiny-llama's embeddings are untied; tiny-gemma2's are tied (one Parameter for
embed_tokens and lm_head), where a LoRA on one of them must leave the other alone. Negative controls: an oracle
that drops the embedding delta, one that forgets the scaling, and one that merges into the tied weight without
untying it each disagree with peft; a saved base weight that is not the base model's is refused by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.engine import math_oracle, oracle_embedding
from bench.engine.math_oracle import MathOracle, compare_oracles
from bench.engine.model import make_inputs
from bench.engine.reference import ReferenceOracle
from bench.engine.sources.adapters import peft_config, resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.errors import BenchInputError
from bench.spec.schema import AdapterSpec, Workload
from bench.spec.state import AdapterState, Slot

WORKLOAD = Workload(kind="forward", batch_size=2, seq_len=16)
EMB = ("embed_tokens", "lm_head", "q_proj")
SPECS = {
    # (model, spec)
    "emb": ("tiny-llama", AdapterSpec(key="emb", rank=4, alpha=8.0, targets=EMB, seed=11, init_std=0.1)),
    "emb_lean": (
        "tiny-llama",
        AdapterSpec(
            key="emb_lean", rank=4, alpha=8.0, targets=EMB, seed=12, init_std=0.1, save_embedding_layers=False
        ),
    ),
    # alpha 24 / r 4: scaling 6, so an oracle that forgets the scaling is far off
    "embed_only": (
        "tiny-llama",
        AdapterSpec(key="embed_only", rank=4, alpha=24.0, targets=("embed_tokens",), seed=13, init_std=0.1),
    ),
    "tied_head": (
        "tiny-gemma2",
        AdapterSpec(key="tied_head", rank=4, alpha=8.0, targets=("lm_head",), seed=14, init_std=0.1),
    ),
    "tied_embed": (
        "tiny-gemma2",
        AdapterSpec(key="tied_embed", rank=4, alpha=8.0, targets=("embed_tokens",), seed=15, init_std=0.1),
    ),
}


@pytest.fixture(scope="module")
def world(cache_root):
    models = {m: resolve_model(f"builtin:{m}", cache_root) for m in ("tiny-llama", "tiny-gemma2")}
    adapters = {k: resolve_adapter(spec, models[m], cache_root).location for k, (m, spec) in SPECS.items()}
    return models, adapters


def _state(*keys: str) -> AdapterState:
    slots = tuple(Slot(f"s{i}", key, False) for i, key in enumerate(keys))
    return AdapterState(slots=slots, active=tuple(s.name for s in slots))


def _oracles(world, model_name, adapters=None):
    models, locations = world
    locations = {**locations, **(adapters or {})}
    location = models[model_name].location
    inputs = make_inputs(WORKLOAD, 1000, "cpu")  # both models have 1000 tokens
    configs = {k: peft_config(spec) for k, (_, spec) in SPECS.items()}
    library = ReferenceOracle(location, "fp32", "cpu", inputs, WORKLOAD, locations, configs)
    math = MathOracle(location, "fp32", "cpu", inputs, WORKLOAD, locations)
    return library, math


CASES = {
    "llama embed_tokens + lm_head + q_proj, base weights saved": ("tiny-llama", ("emb",)),
    "llama the same, saved without the base weights": ("tiny-llama", ("emb_lean",)),
    "llama embed_tokens alone, scaling 6": ("tiny-llama", ("embed_only",)),
    "llama two active embedding adapters": ("tiny-llama", ("emb", "embed_only")),
    "gemma2 (tied) lm_head": ("tiny-gemma2", ("tied_head",)),
    "gemma2 (tied) embed_tokens, scaled embedding": ("tiny-gemma2", ("tied_embed",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_math_agrees_with_peft(world, case):
    model_name, keys = CASES[case]
    library, math = _oracles(world, model_name)
    state = _state(*keys)
    got = math.logits(state)
    agreement = compare_oracles(library.logits(state), got, "fp32")
    print(f"{case}: max|lib-math| = {agreement.max_abs_diff:.3g}")
    assert agreement.agree, agreement
    effect = float((got - math.logits(AdapterState())).abs().max())
    assert effect > 100 * agreement.bound, (case, effect, agreement.bound)


def test_the_saved_layout_is_peft_s(world):
    """lora_embedding_A is (r, num_embeddings), lora_embedding_B (embedding_dim, r); the default save holds the
    base weights of embed_tokens and lm_head, the lean one does not."""
    _, adapters = world
    full = load_file(str(Path(adapters["emb"]) / "adapter_model.safetensors"))
    lean = load_file(str(Path(adapters["emb_lean"]) / "adapter_model.safetensors"))
    p = "base_model.model."
    assert tuple(full[f"{p}model.embed_tokens.lora_embedding_A"].shape) == (4, 1000)
    assert tuple(full[f"{p}model.embed_tokens.lora_embedding_B"].shape) == (64, 4)
    assert tuple(full[f"{p}lm_head.lora_A.weight"].shape) == (4, 64)
    base_keys = {f"{p}model.embed_tokens.base_layer.weight", f"{p}lm_head.base_layer.weight"}
    assert base_keys <= set(full)
    assert not base_keys & set(lean)
    assert set(full) - base_keys == set(lean)


def test_a_lora_on_a_tied_head_leaves_the_embedding_input_alone(world):
    """tiny-gemma2 ties lm_head to embed_tokens. peft's LoRA on lm_head adds its delta in lm_head's forward
    only; the oracle's model must do the same: its embedding weight is the base's, its head is not, and
    they are no longer one Parameter."""
    models, _ = world
    _, math = _oracles(world, "tiny-gemma2")
    base = math.build(AdapterState())
    assert base.lm_head.weight is base.model.embed_tokens.weight  # tied
    model = math.build(_state("tied_head"))
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert torch.equal(model.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert not torch.equal(model.lm_head.weight, base.lm_head.weight)


# ----- negative controls: bugs planted in the oracle are caught by the agreement rule


def _disagrees(world, model_name, keys) -> float:
    library, math = _oracles(world, model_name)
    state = _state(*keys)
    agreement = compare_oracles(library.logits(state), math.logits(state), "fp32")
    assert not agreement.agree, agreement
    return agreement.max_abs_diff


def test_an_oracle_without_the_embedding_delta_is_caught(world, monkeypatch):
    monkeypatch.setattr(math_oracle, "merge_embedding_deltas", lambda modules, adapters, delta, edits: None)
    _disagrees(world, "tiny-llama", ("embed_only",))


def test_an_oracle_that_forgets_the_embedding_scaling_is_caught(world, monkeypatch):
    def unscaled(modules, adapters, delta, edits):
        oracle_embedding.merge_embedding_deltas(
            modules, adapters, lambda w, lora, transposed: (lora.B @ lora.A).T, edits
        )

    monkeypatch.setattr(math_oracle, "merge_embedding_deltas", unscaled)
    _disagrees(world, "tiny-llama", ("embed_only",))


def test_an_oracle_that_merges_into_the_tied_weight_is_caught(world, monkeypatch):
    """Without untying, the lm_head delta lands in the shared Parameter and moves the embedding input too."""
    monkeypatch.setattr(math_oracle, "untie_targets", lambda modules, adapters, edits: None)
    _disagrees(world, "tiny-gemma2", ("tied_head",))


# ----- the files are checked


def _rewrite(world, tmp_path, key, edit) -> str:
    _, adapters = world
    folder = tmp_path / "edited"
    folder.mkdir()
    src = Path(adapters["emb"])
    (folder / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    tensors = load_file(str(src / "adapter_model.safetensors"))
    edit(tensors, key)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return str(folder)


@pytest.mark.parametrize(
    ("key", "edit", "why"),
    [
        ("model.embed_tokens.base_layer.weight", lambda t, k: t[k].mul_(1.01), "differs from the base model"),
        ("lm_head.base_layer.weight", lambda t, k: t[k].add_(1e-3), "differs from the base model"),
        ("model.embed_tokens.lora_embedding_B", lambda t, k: t.pop(k), "no lora_embedding_B"),
        (
            "model.layers.0.mlp.up_proj.base_layer.weight",
            lambda t, k: t.update({k: torch.zeros(128, 64)}),
            "which is no LoRA target",
        ),
        (
            "model.embed_tokens.lora_embedding_A",
            lambda t, k: t.update({k: t[k][:, :999].contiguous()}),
            "shapes A (4, 999)",
        ),
    ],
)
def test_a_file_the_oracle_cannot_compute_is_refused_by_name(world, tmp_path, key, edit, why):
    full_key = f"base_model.model.{key}"
    folder = _rewrite(world, tmp_path, full_key, edit)
    _, math = _oracles(world, "tiny-llama", {"emb": folder})
    with pytest.raises(BenchInputError) as err:
        math.logits(_state("emb"))
    assert why in str(err.value), err.value
    assert key in str(err.value.field), err.value.field
    assert err.value.source.endswith("adapter_model.safetensors")


def test_the_unedited_file_is_accepted(world, tmp_path):
    """The control of the test above: the same copy, with nothing edited, gives peft's output."""
    folder = _rewrite(world, tmp_path, None, lambda t, k: None)
    library, math = _oracles(world, "tiny-llama", {"emb": folder})
    assert compare_oracles(library.logits(_state("emb")), math.logits(_state("emb")), "fp32").agree


def test_source_imports_no_peft():
    tree = ast.parse(Path(oracle_embedding.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] == "peft"], names


def test_peft_s_lora_on_a_tied_head_leaves_the_embedding_input_alone(world):
    """What the library does, on its own: after transformers' load_adapter of an lm_head LoRA on tied tiny-gemma2
    the embedding output is the base model's, and the logits are not (the adapter is there)."""
    from bench.engine.model import load_model

    models, adapters = world
    location = models["tiny-gemma2"].location
    ids = torch.tensor([[5, 6, 7, 8]])
    base = load_model(location, "fp32", "cpu")
    with torch.no_grad():
        base_input, base_logits = base.model.embed_tokens(ids), base(ids).logits
    model = load_model(location, "fp32", "cpu")
    model.load_adapter(adapters["tied_head"], adapter_name="a")
    with torch.no_grad():
        assert torch.equal(model.model.embed_tokens(ids), base_input)
        assert float((model(ids).logits - base_logits).abs().max()) > 0.1
