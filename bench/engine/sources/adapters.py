"""Adapter sources: a saved PEFT adapter (folder or Hub id), or a LoRA spec the suite turns into one.

A generated adapter is real: get_peft_model on the base, LoRA A and B drawn from a seeded generator (LoRA's
default init zeroes B, which would leave the output unchanged and make every correctness check pass), then
save_pretrained. Its cache key covers the spec, the base model's fingerprint and the library versions.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.engine.sources.cache import cached_folder
from bench.engine.sources.models import ResolvedModel, local_path_exists
from bench.spec.schema import AdapterSpec

# The parameters an adapter adds to its base layers (LoRA, AdaLoRA, IA3).
_ADAPTER_PARAM = re.compile(r"lora_|ia3_l")


@dataclass(frozen=True)
class ResolvedAdapter:
    key: str
    location: str  # folder or Hub id, what load_adapter receives
    kind: str  # "generated" | "local" | "hub"
    built_now: bool = False


def peft_config(spec: AdapterSpec):
    """The peft config a spec describes (also what add_adapter receives): LoraConfig, IA3Config, AdaLoraConfig."""
    if spec.type == "ia3":
        from peft import IA3Config

        return IA3Config(
            task_type="CAUSAL_LM",
            target_modules=list(spec.targets),
            feedforward_modules=list(spec.feedforward),
        )
    if spec.type == "adalora":
        from peft import AdaLoraConfig

        # One rank throughout (init_r = target_r = r): no budget schedule runs outside training.
        return AdaLoraConfig(
            task_type="CAUSAL_LM",
            r=spec.rank,
            init_r=spec.rank,
            target_r=spec.rank,
            lora_alpha=spec.alpha,
            target_modules=list(spec.targets),
            lora_dropout=spec.lora_dropout,
            total_step=1,
        )
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=list(spec.targets),
        rank_pattern=dict(spec.rank_pattern),
        alpha_pattern=dict(spec.alpha_pattern),
        lora_dropout=spec.lora_dropout,
        modules_to_save=list(spec.modules_to_save) or None,
        target_parameters=list(spec.target_parameters) or None,
        use_dora=spec.use_dora,
    )


# peft 0.21's EMBEDDING_LAYER_NAMES: for a target of these names save_pretrained's default
# (save_embedding_layers="auto") also saves the layer's base weight, so a user's adapter file holds it.
_EMBEDDING_LAYER_NAMES = ("embed_tokens", "lm_head")


def targets_embedding_layers(spec: AdapterSpec) -> bool:
    return any(t.rpartition(".")[2] in _EMBEDDING_LAYER_NAMES for t in spec.targets)


# A Hub adapter id is OWNER/NAME; anything else that does not exist locally is a missing path, reported as
# such rather than sent to the Hub (where it would fail later, slowly, with a download error).
_HUB_ADAPTER_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def resolve_adapter(
    spec: AdapterSpec,
    model: ResolvedModel,
    cache_root: Path,
    *,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> ResolvedAdapter:
    if spec.path is not None:
        path = Path(spec.path).expanduser()
        if local_path_exists(path, f"adapter {spec.key!r}"):
            if not path.is_dir():
                raise FileNotFoundError(
                    f"adapter {spec.key!r}: {path} is not a folder (a saved PEFT adapter)"
                )
            if not (path / "adapter_config.json").is_file():
                raise FileNotFoundError(
                    f"adapter {spec.key!r}: folder {path} has no adapter_config.json (not a PEFT adapter)"
                )
            return ResolvedAdapter(spec.key, str(path.resolve()), "local")
        if spec.path.startswith((".", "/", "~")) or not _HUB_ADAPTER_RE.match(spec.path):
            raise FileNotFoundError(f"adapter {spec.key!r}: path {spec.path} does not exist")
        return ResolvedAdapter(spec.key, spec.path, "hub")
    # use_dora only when set, save_embedding_layers only when not the default: the adapters built before the
    # fields existed keep their cache keys.
    fields = {k: v for k, v in asdict(spec).items() if k not in ("key", "path") and (k != "use_dora" or v)}
    if spec.save_embedding_layers:
        del fields["save_embedding_layers"]
    key_spec = {"adapter": fields, "base": model.fingerprint}
    folder, built = cached_folder(
        cache_root,
        "adapters",
        spec.key,
        key_spec,
        lambda tmp: _build(spec, model.location, tmp, trust_remote_code, allow_pickle),
    )
    return ResolvedAdapter(spec.key, str(folder), "generated", built)


def _build(
    spec: AdapterSpec, base_location: str, out: Path, trust_remote_code: bool, allow_pickle: bool
) -> None:
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    pickle = None if allow_pickle else True
    if (
        spec.modules_to_save
        or spec.use_dora
        or (spec.save_embedding_layers and targets_embedding_layers(spec))
    ):
        # The saved copies start from the base model's own weights, DoRA's magnitudes are drawn around the row
        # norms of the merged weights, and peft's save_pretrained writes the base weight of a targeted
        # embed_tokens / lm_head beside its LoRA: those must be loaded.
        base = AutoModelForCausalLM.from_pretrained(
            base_location, dtype=torch.float32, trust_remote_code=trust_remote_code, use_safetensors=pickle
        )
    else:
        # LoRA weights are seeded draws whose shapes come from the config alone: the base is built on the
        # meta device (no weights read, no memory), and only the LoRA layers are materialised. The files are
        # byte-identical to a build on the loaded model; an 8B base costs seconds instead of 32 GB of fp32.
        config = AutoConfig.from_pretrained(base_location, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            base = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    peft_model = get_peft_model(base, peft_config(spec))
    for name, module in peft_model.named_modules():
        if _ADAPTER_PARAM.search(name) and any(p.is_meta for p in module.parameters(recurse=False)):
            module.to_empty(device="cpu", recurse=False)
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if "lora_magnitude_vector" in name:  # after its module's A and B in sorted order
                param.copy_(
                    _dora_magnitude(peft_model, name, torch.randn(param.shape, generator=gen) * spec.init_std)
                )
            elif "ia3_l" in name:
                # Learned rescaling vectors near 1: IA3's init is exactly 1 (no effect), like LoRA's B = 0.
                param.copy_(1 + torch.randn(param.shape, generator=gen) * spec.init_std)
            elif "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * spec.init_std)
            elif "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=gen) * spec.init_std)
    peft_model.save_pretrained(
        out, safe_serialization=True, save_embedding_layers="auto" if spec.save_embedding_layers else False
    )
    (out / "bench-adapter.json").write_text(
        json.dumps({"spec": asdict(spec), "base": base_location}, indent=2)
    )


def _dora_magnitude(peft_model, name: str, noise):
    """A trained DoRA magnitude: the row norms of W + scaling * B @ A (peft's init, with which DoRA equals plain
    LoRA) times 1 + noise, so that a library that ignores the magnitude gives another output."""
    import torch

    layer = peft_model.get_submodule(name.split(".lora_magnitude_vector.")[0])
    weight = layer.get_base_layer().weight.float()
    if getattr(layer, "fan_in_fan_out", False):  # Conv1D: stored (in, out)
        weight = weight.T
    delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    return torch.linalg.vector_norm(weight + layer.scaling["default"] * delta, dim=1) * (1 + noise)
