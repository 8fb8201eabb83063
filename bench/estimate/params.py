"""A model's parameter count without building its weights: from its config, or its safetensors headers.

Built-in models count from their config (bench.engine.sources.models); a local folder or a Hub id already in
the Hugging Face cache from its safetensors headers (exact), else its config.json. Anything else is None:
the estimate says "unknown" rather than guess a size.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from bench.engine.sources.models import BUILTIN_MODELS, BUILTIN_PREFIX

# Families whose count follows from their config, with the flags their config classes default to when a
# config.json leaves them out (sizes are never defaulted: a config without them is unknown).
GATED_DECODERS = {  # embeddings, attention, a gated MLP (gate/up/down), RMS norms
    "llama": {"tie_word_embeddings": False, "attention_bias": False, "qkv_bias": False},
    "mistral": {"tie_word_embeddings": False, "attention_bias": False, "qkv_bias": False},
    "qwen2": {"tie_word_embeddings": False, "attention_bias": False, "qkv_bias": True},
    # gemma 2: a norm before and after both attention and MLP (four per layer), embeddings tied
    "gemma2": {"tie_word_embeddings": True, "attention_bias": False, "qkv_bias": False, "norms_per_layer": 4},
}
_CONFIG_CLASS_TYPES = {
    "LlamaConfig": "llama",
    "Qwen2Config": "qwen2",
    "GPT2Config": "gpt2",
    "MistralConfig": "mistral",
    "Gemma2Config": "gemma2",
    "MixtralConfig": "mixtral",
}
_HEADER_LIMIT_BYTES = 100 * 2**20  # safetensors caps its JSON header at 100 MB


def count_from_config(config: dict[str, Any]) -> int | None:
    """Parameters of a causal LM from its config.json fields (tied embeddings counted once), or None."""
    kind = config.get("model_type")
    try:
        if kind in GATED_DECODERS:
            return _gated_decoder(config, GATED_DECODERS[kind])
        if kind == "gpt2":
            return _gpt2(config)
        if kind == "mixtral":
            return _mixtral(config)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None  # a size missing or not a number: unknown, never a default
    return None


def _gated_decoder(c: dict[str, Any], defaults: dict[str, bool]) -> int:
    h, inter, layers, vocab = (
        int(c[k]) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")
    )
    heads = int(c["num_attention_heads"])
    kv_heads = int(c.get("num_key_value_heads") or heads)
    head_dim = int(c.get("head_dim") or h // heads)
    q, kv = heads * head_dim, kv_heads * head_dim
    attention = h * q + 2 * h * kv + q * h
    if c.get("attention_bias", defaults["attention_bias"]):
        attention += q + 2 * kv + h
    elif defaults["qkv_bias"]:
        attention += q + 2 * kv
    per_layer = (
        attention + 3 * h * inter + defaults.get("norms_per_layer", 2) * h
    )  # q k v o, gate up down, norms
    tied = c.get("tie_word_embeddings", defaults["tie_word_embeddings"])
    return vocab * h * (1 if tied else 2) + layers * per_layer + h


def _mixtral(c: dict[str, Any]) -> int:
    """A llama-like decoder whose MLP is num_local_experts gated experts (gate_up and down, fused per layer)
    behind a router Linear (hidden -> experts); no biases, embeddings untied unless the config ties them."""
    experts = int(c["num_local_experts"])
    dense = _gated_decoder({**c, "intermediate_size": 0}, GATED_DECODERS["mistral"])
    h, inter, layers = (int(c[k]) for k in ("hidden_size", "intermediate_size", "num_hidden_layers"))
    return dense + layers * (experts * 3 * h * inter + h * experts)


def _gpt2(c: dict[str, Any]) -> int:
    h, layers, vocab, positions = (int(c[k]) for k in ("n_embd", "n_layer", "vocab_size", "n_positions"))
    inner = int(c.get("n_inner") or 4 * h)
    per_layer = (3 * h * h + 3 * h) + (h * h + h) + (h * inner + inner) + (inner * h + h) + 4 * h
    lm_head = 0 if c.get("tie_word_embeddings", True) else vocab * h
    return vocab * h + positions * h + layers * per_layer + 2 * h + lm_head


def builtin_config(name: str) -> dict[str, Any] | None:
    entry = BUILTIN_MODELS.get(name)
    if entry is None:
        return None
    return {"model_type": _CONFIG_CLASS_TYPES.get(entry["config_class"]), **entry["config"]}


def count_from_safetensors(folder: Path) -> int | None:
    """Sum of every tensor's element count in a folder's *.safetensors headers (no tensor is read)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        try:
            with open(f, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                if size > _HEADER_LIMIT_BYTES:
                    return None
                header = json.loads(fh.read(size))
        except (OSError, struct.error, ValueError):
            return None  # unreadable or not safetensors: the estimate says unknown, the case will say why
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            n = 1
            for dim in entry.get("shape", ()):
                n *= int(dim)
            total += n
    return total


def count_in_folder(folder: Path) -> int | None:
    counted = count_from_safetensors(folder)
    if counted is not None:
        return counted
    config = _config_in(folder)
    return count_from_config(config) if config else None


def hub_snapshot(model_id: str, env: dict[str, str] | None = None) -> Path | None:
    """The newest snapshot folder of a Hub id in the Hugging Face cache, or None (nothing is downloaded)."""
    env = os.environ if env is None else env
    root = env.get("HF_HUB_CACHE") or (
        Path(env["HF_HOME"]) / "hub" if env.get("HF_HOME") else Path.home() / ".cache" / "huggingface" / "hub"
    )
    snapshots = Path(root) / f"models--{model_id.replace('/', '--')}" / "snapshots"
    try:
        found = [p for p in snapshots.iterdir() if (p / "config.json").is_file()]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def layers_from_config(config: dict[str, Any]) -> int | None:
    """The decoder layers a compile traces, from config.json (`num_hidden_layers`; GPT-2: `n_layer`), or None."""
    try:
        layers = int(config.get("num_hidden_layers", config.get("n_layer")))
    except (TypeError, ValueError):  # missing (None) or not a number
        return None
    return layers if layers > 0 else None


def _config_in(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _folder_of(source: str, env: dict[str, str] | None) -> Path | None:
    """Where a non-built-in `model` lies on disk: a local folder, or its newest Hub cache snapshot."""
    path = Path(source).expanduser()
    return path if path.is_dir() else hub_snapshot(source, env)


def layer_count(source: str, env: dict[str, str] | None = None) -> int | None:
    """The scenario's `model` as its number of decoder layers (what a compile's trace grows with), from the
    config that parameter_count reads; None where unknown."""
    if source.startswith(BUILTIN_PREFIX):
        config = builtin_config(source[len(BUILTIN_PREFIX) :])
    else:
        folder = _folder_of(source, env)
        config = _config_in(folder) if folder else None
    return layers_from_config(config) if config else None


def parameter_count(source: str, env: dict[str, str] | None = None) -> int | None:
    """The scenario's `model` as a parameter count, or None where it cannot be known without loading it."""
    if source.startswith(BUILTIN_PREFIX):
        config = builtin_config(source[len(BUILTIN_PREFIX) :])
        return count_from_config(config) if config else None
    folder = _folder_of(source, env)
    return count_in_folder(folder) if folder else None
