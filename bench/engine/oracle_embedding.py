"""LoRA on embedding layers (embed_tokens) and on lm_head, for the math oracle, read from the files alone.

Written from PEFT's documentation and its Embedding layer, in our own code (no peft import):

- an nn.Embedding target (embed_tokens) holds lora_embedding_A (r, num_embeddings) and lora_embedding_B
  (embedding_dim, r), saved as `base_model.model.<module>.lora_embedding_A` / `_B` (no ".weight", the adapter
  name removed). The layer looks the ids up in A.T and multiplies by B.T: out += scaling * A.T[ids] @ B.T,
  which is the weight delta scaling * (B @ A).T, laid out (num_embeddings, embedding_dim) like the weight.
  A scaled embedding (gemma's embed_scale) scales the LoRA output alike, so the merged weight is exact there
  too; an embedding with max_norm would renormalise the lookup of A separately, and is refused.
- lm_head is an nn.Linear: its lora_A / lora_B are read and merged like any Linear target (lora_files.py).
- save_pretrained's default for a target named embed_tokens or lm_head (save_embedding_layers "auto") also
  writes the layer's base weight, `base_model.model.<module>.base_layer.weight`, and loading the adapter
  copies it into the model. The oracle computes on the base model's own weights, so it requires each saved
  base weight to equal the base model's bit for bit (in the model's dtype) and refuses another (a resized or
  retrained embedding) by name.
- tied input and output embeddings (gemma): one Parameter is shared by embed_tokens and lm_head, and a LoRA
  on either changes only that layer's output. Merging in place would move both, so every LoRA target whose
  weight another module shares gets its own copy first (`untie_targets`).
"""

from __future__ import annotations

from typing import Any

from bench.errors import BenchInputError

_EMBEDDING_SUFFIXES = {".lora_embedding_A": "A", ".lora_embedding_B": "B"}
_BASE_SUFFIX = ".base_layer.weight"


def is_embedding_key(rest: str) -> bool:
    """A saved key (without `base_model.model.`) this module reads: an embedding LoRA or a saved base weight."""
    return rest.endswith(_BASE_SUFFIX) or any(rest.endswith(s) for s in _EMBEDDING_SUFFIXES)


def is_embedding(module) -> bool:
    return (
        hasattr(module, "num_embeddings") and hasattr(module, "embedding_dim") and hasattr(module, "weight")
    )


def read_embedding_loras(
    config: dict[str, Any],
    tensors: dict[str, Any],
    modules: dict[str, Any],
    source: str,
    *,
    is_targeted,
    scaling_for,
    module_type,
) -> tuple[Any, ...]:
    """The embedding LoRAs of one adapter file (LoraModule records, A (r, num_embeddings), B (dim, r)), after
    checking the saved base weights. `tensors` maps the claimed keys (without the prefix) to their tensors;
    the lora_files helpers come in as arguments (that module imports this one)."""
    pairs: dict[str, dict[str, Any]] = {}
    for rest, tensor in sorted(tensors.items()):
        if rest.endswith(_BASE_SUFFIX):
            _check_base_copy(rest[: -len(_BASE_SUFFIX)], tensor, config, modules, source, is_targeted)
            continue
        suffix = next(s for s in _EMBEDDING_SUFFIXES if rest.endswith(s))
        module = rest[: -len(suffix)]
        if module not in modules or not is_embedding(modules[module]):
            raise BenchInputError(
                f"unknown key: the base model has no embedding layer {module!r}", source=source, field=rest
            )
        if not is_targeted(config.get("target_modules"), module):
            raise BenchInputError(
                f"unknown key: module {module!r} is not in target_modules", source=source, field=rest
            )
        pairs.setdefault(module, {})[_EMBEDDING_SUFFIXES[suffix]] = tensor.float()
    out = []
    targets = sorted(
        n for n, m in modules.items() if is_embedding(m) and is_targeted(config.get("target_modules"), n)
    )
    for module in targets:
        got = pairs.get(module, {})
        for part in ("A", "B"):
            if part not in got:
                raise BenchInputError(
                    f"missing key: embedding {module!r} is targeted but the file has no lora_embedding_{part}",
                    source=source,
                    field=f"{module}.lora_embedding_{part}",
                )
        layer = modules[module]
        if getattr(layer, "max_norm", None) is not None:
            raise BenchInputError(
                f"embedding {module!r} has max_norm {layer.max_norm}: the math oracle merges the LoRA into the"
                " weight, which a renormalised lookup does not allow",
                source=source,
                field=f"{module}.lora_embedding_A",
            )
        rank, alpha, scaling = scaling_for(config, module)
        a, b = got["A"], got["B"]
        want_a, want_b = (rank, int(layer.num_embeddings)), (int(layer.embedding_dim), rank)
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            raise BenchInputError(
                f"shapes A {tuple(a.shape)}, B {tuple(b.shape)}, expected A {want_a}, B {want_b} (rank {rank},"
                f" the embedding's {layer.num_embeddings} x {layer.embedding_dim})",
                source=source,
                field=f"{module}.lora_embedding_A",
            )
        out.append(module_type(module, a, b, rank, alpha, scaling))
    return tuple(out)


def _check_base_copy(module: str, tensor, config, modules: dict[str, Any], source: str, is_targeted) -> None:
    import torch

    field = module + _BASE_SUFFIX
    if module not in modules or not is_targeted(config.get("target_modules"), module):
        raise BenchInputError(
            f"unknown key: a saved base weight of {module!r}, which is no LoRA target",
            source=source,
            field=field,
        )
    weight = modules[module].weight
    if tuple(tensor.shape) != tuple(weight.shape) or not torch.equal(
        tensor.to(weight.dtype).to(weight.device), weight
    ):
        raise BenchInputError(
            f"the saved base weight of {module!r} (shape {tuple(tensor.shape)}) differs from the base model's"
            f" (shape {tuple(weight.shape)}): loading the adapter would replace it (a resized or retrained"
            " embedding), and the math oracle computes on the base model's own weights",
            source=source,
            field=field,
        )


def untie_targets(modules: dict[str, Any], adapters, edits) -> None:
    """Give every LoRA target whose weight another module shares (tied embeddings) a copy of its own, so that
    merging its delta leaves the other module as it is."""
    import torch

    owners: dict[int, int] = {}
    for module in modules.values():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            owners[id(weight)] = owners.get(id(weight), 0) + 1
    targets = {lo.module for adapter in adapters for lo in (*adapter.lora, *adapter.embedding)}
    for name in sorted(targets):
        module = modules[name]
        if owners.get(id(module.weight), 0) > 1:
            owners[id(module.weight)] -= 1
            edits.replace(
                module, "weight", torch.nn.Parameter(module.weight.detach().clone(), requires_grad=False)
            )


def merge_embedding_deltas(modules: dict[str, Any], adapters, delta, edits) -> None:
    """W_embed + scaling * (B @ A).T per embedding LoRA, in fp32 (`delta` is math_oracle.lora_delta; `edits`,
    oracle_base.Edits, keeps each weight before it changes, so a shared base can be put back)."""
    for adapter in adapters:
        for lora in adapter.embedding:
            weight = edits.keep(modules[lora.module].weight)
            weight.copy_((weight.float() + delta(weight, lora, transposed=True)).to(weight.dtype))
