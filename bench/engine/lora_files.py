"""A saved LoRA adapter read from its files alone (adapter_config.json + adapter_model.safetensors), no peft.

This is the math oracle's half that turns an adapter folder into per-module (A, B, scaling) and saved copies
of whole modules (modules_to_save). Every rule here is written from PEFT's documentation and source, in our own
code, so that a bug inside peft's loading path cannot reach it:

- scaling = alpha / r, or alpha / sqrt(r) with use_rslora;
- r and alpha per module come from rank_pattern / alpha_pattern: the pattern keys are tried in the order the
  config lists them, and the first key K for which the regex `(.*\\.)?(K)$` matches the whole module name
  wins (so a key matches a name's dotted suffix, and the key itself is a regex);
- saved keys are `base_model.model.<module>.lora_A.weight` / `.lora_B.weight` (the adapter name removed), and
  `base_model.model.<module>.<param>` for a modules_to_save copy;
- with use_dora, each target also has `base_model.model.<module>.lora_magnitude_vector` (peft 0.21 saves it
  without `.weight`; an older `.weight` form is read too), one magnitude per output row (oracle_dora.py);
- LoRA on an nn.Embedding (embed_tokens, `lora_embedding_A` / `_B`) and the base weights peft saves beside a
  targeted embed_tokens / lm_head: oracle_embedding.py;
- a list target_modules selects a module whose name equals an entry or ends in `.<entry>`; a string is a
  regex matched against the whole name. Modules inside a modules_to_save module are never targeted;
- target_parameters (LoRA on nn.Parameters, e.g. a mixture of experts' fused weights): oracle_params.py.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.engine.oracle_embedding import is_embedding_key, read_embedding_loras
from bench.engine.oracle_params import ParamLora, parameter_targets, read_param_loras
from bench.errors import BenchInputError

CONFIG_FILE = "adapter_config.json"
# The methods the Transformers guide names: LoRA, AdaLoRA (B diag(E) A) and IA3 (learned rescaling vectors).
PEFT_TYPES = ("LORA", "ADALORA", "IA3")
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_LORA_SUFFIXES = {
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_magnitude_vector": "m",
    ".lora_magnitude_vector.weight": "m",
}

# init_lora_weights values whose initialisation changes the base model's weights (pissa_niter_N included).
BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq")
# Config fields whose non-default value changes the math beyond W + scaling * B @ A (or DoRA's, use_dora). The
# oracle refuses them by name rather than compute something else and call it the reference.
_UNSUPPORTED_WHEN_SET = (
    "lora_bias",
    "layer_replication",
    "trainable_token_indices",
    "alora_invocation_tokens",
    "layers_to_transform",
    "use_bdlora",
    "use_qalora",
)


@dataclass(frozen=True)
class LoraModule:
    module: str  # name in the base model, e.g. model.layers.0.self_attn.q_proj
    A: Any  # (r, in_features) fp32 tensor
    B: Any  # (out_features, r) fp32 tensor
    rank: int
    alpha: float
    scaling: float
    magnitude: Any = None  # DoRA: (out_features,) fp32, one per output row; None for plain LoRA


@dataclass(frozen=True)
class Ia3Vector:
    module: str
    vector: Any  # fp32; (out_features, 1) rescales the output, (1, in_features) the input (feedforward)
    feedforward: bool


@dataclass(frozen=True)
class AdapterWeights:
    location: str
    lora: tuple[LoraModule, ...]
    saved_copies: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]  # (module, ((param, tensor), ...))
    ia3: tuple[Ia3Vector, ...] = ()  # IA3 adapters (peft_type IA3) hold these instead of `lora`
    params: tuple[ParamLora, ...] = ()  # LoRA on nn.Parameters (target_parameters): oracle_params.py
    embedding: tuple[LoraModule, ...] = ()  # LoRA on nn.Embedding targets: A (r, num_embeddings), B (dim, r)

    def saved_copy(self, module: str) -> dict[str, Any] | None:
        return next((dict(params) for name, params in self.saved_copies if name == module), None)


def pattern_key(pattern_keys, module_name: str) -> str | None:
    """The rank_pattern / alpha_pattern key that applies to module_name, or None (then r / lora_alpha)."""
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", module_name):
            return key
    return None


def is_targeted(target_modules, module_name: str) -> bool:
    if target_modules is None:
        return False
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module_name) is not None
    return any(module_name == t or module_name.endswith(f".{t}") for t in target_modules)


def config_targets(config: dict[str, Any], module_name: str) -> bool:
    """The config puts an adapter layer on this module: in target_modules and not in exclude_modules (peft
    matches both by the same rule: a regex against the whole name, or a list of names or suffixes)."""
    excluded = config.get("exclude_modules")
    return is_targeted(config.get("target_modules"), module_name) and not (
        excluded and is_targeted(excluded, module_name)
    )


def in_saved_module(modules_to_save, module_name: str) -> bool:
    return any(re.match(rf"(^|.*\.){m}($|\..*)", module_name) for m in modules_to_save or ())


def scaling_for(config: dict[str, Any], module_name: str) -> tuple[int, float, float]:
    """(rank, alpha, scaling) of one module under a config dict (as adapter_config.json holds it)."""
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rk = pattern_key(rank_pattern.keys(), module_name)
    ak = pattern_key(alpha_pattern.keys(), module_name)
    rank = int(rank_pattern[rk]) if rk is not None else int(config["r"])
    alpha = float(alpha_pattern[ak]) if ak is not None else float(config["lora_alpha"])
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return rank, alpha, scaling


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise BenchInputError(f"no {CONFIG_FILE} in {folder}", source=str(path))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchInputError(f"cannot be read as JSON: {exc}", source=str(path)) from None
    if config.get("peft_type") not in PEFT_TYPES:
        raise BenchInputError(
            f"the math oracle handles {', '.join(PEFT_TYPES)}, got {config.get('peft_type')!r}",
            source=str(path),
            field="peft_type",
        )
    if config["peft_type"] == "IA3":
        return config
    if config["peft_type"] == "ADALORA" and config.get("rank_pattern"):
        raise BenchInputError(
            "set: the math oracle computes AdaLoRA before any rank budget masks it (rank_pattern null)",
            source=str(path),
            field="rank_pattern",
        )
    for field in ("r", "lora_alpha"):
        if not isinstance(config.get(field), (int, float)):
            raise BenchInputError("missing or not a number", source=str(path), field=field)
    if config.get("use_dora") and config["peft_type"] != "LORA":
        raise BenchInputError("set: DoRA is a LoRA variant", source=str(path), field="use_dora")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_REWRITING_INITS):
        # Loading such an adapter runs its initialisation again (transformers' load_adapter and peft's
        # from_pretrained alike), which rewrites the base weights; the file holds only A and B.
        raise BenchInputError(
            f"set to {init!r}: loading it rewrites the base weights (peft runs this initialisation again), and "
            "the math oracle computes W + scaling * B @ A on the base as saved",
            source=str(path),
            field="init_lora_weights",
        )
    for field in _UNSUPPORTED_WHEN_SET:
        if config.get(field):
            raise BenchInputError(
                f"set to {config[field]!r}: the math oracle computes only W + scaling * B @ A",
                source=str(path),
                field=field,
            )
    return config


def read_adapter(location: str, modules: dict[str, Any]) -> AdapterWeights:
    """Read and check one adapter folder against the base model's modules (name -> module).

    Every key in the weights file must be a LoRA A/B of a module the config targets, an embedding LoRA or a
    saved base weight of a targeted embed_tokens / lm_head (oracle_embedding.py), or a parameter of a
    modules_to_save copy; every targeted module must have both A and B with the shapes its rank implies.
    Long because it sorts every key of the file in one pass, each kind with its own error."""
    from safetensors import safe_open

    folder = Path(location)
    config = read_config(folder)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise BenchInputError(
            f"no {WEIGHTS_FILE} in {folder} (the math oracle reads safetensors only)",
            source=str(weights_path),
        )
    if config["peft_type"] != "LORA":  # AdaLoRA and IA3: bench.engine.method_files.read_any_adapter
        raise BenchInputError(f"not LoRA: {config['peft_type']}", source=str(folder / CONFIG_FILE))
    saved_modules = config.get("modules_to_save") or []
    pairs: dict[str, dict[str, Any]] = {}
    copies: dict[str, dict[str, Any]] = {}
    param_keys = parameter_targets(config, modules)  # read by read_param_loras
    embedding_keys: dict[str, Any] = {}  # embedding LoRAs and saved base weights: oracle_embedding.py

    def bad(key: str, why: str) -> BenchInputError:
        return BenchInputError(why, source=str(weights_path), field=key)

    with safe_open(str(weights_path), framework="pt") as f:
        for key in sorted(set(f.keys()) - set(param_keys)):
            if not key.startswith(_PREFIX):
                raise bad(key, f"unknown key: it does not start with {_PREFIX!r}")
            rest = key[len(_PREFIX) :]
            suffix = next((s for s in _LORA_SUFFIXES if rest.endswith(s)), None)
            if suffix is not None:
                module = rest[: -len(suffix)]
                if module not in modules:
                    raise bad(key, f"unknown key: the base model has no module {module!r}")
                if not config_targets(config, module):
                    raise bad(
                        key, f"unknown key: module {module!r} is not in target_modules (or is excluded)"
                    )
                if _LORA_SUFFIXES[suffix] == "m" and not config.get("use_dora"):
                    raise bad(key, "unknown key: a DoRA magnitude in an adapter without use_dora")
                pairs.setdefault(module, {})[_LORA_SUFFIXES[suffix]] = f.get_tensor(key).float()
                continue
            if is_embedding_key(rest):
                embedding_keys[rest] = f.get_tensor(key)
                continue
            module, _, param = rest.rpartition(".")
            if module in modules and in_saved_module(saved_modules, module):
                copies.setdefault(module, {})[param] = f.get_tensor(key)
                continue
            raise bad(key, "unknown key: neither a lora_A/lora_B weight nor part of a modules_to_save module")

    lora = _lora_modules(config, modules, pairs, bad)
    extra = sorted(set(pairs) - {m.module for m in lora})
    if extra:
        raise bad(f"{_PREFIX}{extra[0]}.lora_A.weight", f"module {extra[0]!r} is not a LoRA target here")
    for module in saved_modules:
        matched = [n for n in copies if n == module or n.endswith(f".{module}")]
        if not matched:
            raise bad(
                f"{_PREFIX}{module}.weight",
                f"missing key: modules_to_save names {module!r}, the file has no copy",
            )
    return AdapterWeights(
        location=str(folder),
        lora=tuple(lora),
        saved_copies=tuple((m, tuple(sorted(p.items()))) for m, p in sorted(copies.items())),
        params=read_param_loras(config, modules, weights_path),
        embedding=_embedding_loras(config, embedding_keys, modules, weights_path),
    )


def _lora_modules(
    config: dict[str, Any], modules: dict[str, Any], pairs: dict[str, dict[str, Any]], bad
) -> list:
    """Every module the config targets, with its A and B (and DoRA magnitude) checked against its shape."""
    lora = []
    for module in sorted(n for n in modules if _lora_target(config, n, modules[n])):
        got = pairs.get(module, {})
        for part in ("A", "B"):
            if part not in got:
                key = f"{_PREFIX}{module}.lora_{part}.weight"
                raise bad(key, f"missing key: module {module!r} is targeted but the file has no lora_{part}")
        rank, alpha, scaling = scaling_for(config, module)
        a, b = got["A"], got["B"]
        out_features, in_features = _features(modules[module], config)
        if tuple(a.shape) != (rank, in_features) or tuple(b.shape) != (out_features, rank):
            raise bad(
                f"{_PREFIX}{module}.lora_A.weight",
                f"shapes A {tuple(a.shape)}, B {tuple(b.shape)} do not fit rank {rank} (from r / rank_pattern)"
                f" and the module's {in_features} -> {out_features}",
            )
        magnitude = _magnitude(config, module, got.get("m"), out_features, bad)
        lora.append(LoraModule(module, a, b, rank, alpha, scaling, magnitude))
    return lora


def _magnitude(config: dict[str, Any], module: str, magnitude, out_features: int, bad):
    """DoRA's magnitude of one module, checked: present exactly when use_dora is set, one per output row."""
    key = f"{_PREFIX}{module}.lora_magnitude_vector"
    if config.get("use_dora") and magnitude is None:
        raise bad(key, "missing key: use_dora is set, no magnitude")
    if magnitude is not None and tuple(magnitude.shape) != (out_features,):
        raise bad(
            key,
            f"DoRA magnitude of shape {tuple(magnitude.shape)}, the module has {out_features} output rows",
        )
    return magnitude


def _embedding_loras(config, keys: dict[str, Any], modules: dict[str, Any], weights_path: Path):
    return read_embedding_loras(
        config,
        keys,
        modules,
        str(weights_path),
        is_targeted=is_targeted,
        scaling_for=scaling_for,
        module_type=LoraModule,
    )


def is_conv1d(module) -> bool:
    """transformers' Conv1D (GPT-2): weight stored (in_features, out_features), y = x @ W + b."""
    return type(module).__name__ == "Conv1D"


def _lora_target(config: dict[str, Any], name: str, module) -> bool:
    if not config_targets(config, name):
        return False
    if in_saved_module(config.get("modules_to_save"), name):
        return False
    return hasattr(module, "weight") and (is_conv1d(module) or hasattr(module, "in_features"))


def _features(module, config: dict[str, Any]) -> tuple[int, int]:
    if is_conv1d(module):
        in_features, out_features = module.weight.shape
        return int(out_features), int(in_features)
    return int(module.out_features), int(module.in_features)
