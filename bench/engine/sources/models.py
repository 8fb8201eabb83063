"""Model sources: built-in tiny models (no download), local folders and Hub ids, all through from_pretrained.

A built-in model is built from a config with a fixed seed, saved with save_pretrained (safetensors) into the
cache, and then loaded with from_pretrained from that folder: exactly the path a local folder or a Hub id takes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.engine.sources.cache import cached_folder
from bench.errors import BenchInputError

BUILTIN_PREFIX = "builtin:"

# Architecture families with the module names LoRA targets in each. GPT-2 uses Conv1D (fan_in_fan_out),
# which PEFT handles differently from nn.Linear.
BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    "tiny-llama": {
        "config_class": "LlamaConfig",
        "model_class": "LlamaForCausalLM",
        "config": dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=1000,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
    # Wider, for memory scenarios: one rank-64 adapter on every projection is ~2.4 MB, well above RSS noise.
    "small-llama": {
        "config_class": "LlamaConfig",
        "model_class": "LlamaForCausalLM",
        "config": dict(
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=1000,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
    "tiny-qwen2": {
        "config_class": "Qwen2Config",
        "model_class": "Qwen2ForCausalLM",
        "config": dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=1000,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
    "tiny-gpt2": {
        "config_class": "GPT2Config",
        "model_class": "GPT2LMHeadModel",
        "config": dict(
            n_embd=64,
            n_layer=2,
            n_head=4,
            vocab_size=1000,
            n_positions=256,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "targets": ["c_attn", "c_proj", "c_fc"],
    },
    # The gemma family (the guide's own examples are gemma-2-2b and gemma-7b), with its config quirks made to
    # matter at this size: logits soft-capped by tanh (final cap 3.0 turns a 4.2 logit into 2.6 here, so an
    # adapter's effect on the output is not linear), sliding-window attention on every other layer (window 8,
    # below the workloads' 16 tokens), tied input and output embeddings, embeddings scaled by sqrt(hidden),
    # and a wider initialisation so that the caps are reached at all.
    "tiny-gemma2": {
        "config_class": "Gemma2Config",
        "model_class": "Gemma2ForCausalLM",
        "config": dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            vocab_size=1000,
            max_position_embeddings=256,
            sliding_window=8,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            tie_word_embeddings=True,
            initializer_range=0.1,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
    # A mixture of experts (Mixtral family; peft#3304): each layer's MLP is 4 experts, 2 routed per token, whose
    # weights are stored fused as 3-D nn.Parameters (experts.gate_up_proj (E, 2 * inter, hidden),
    # experts.down_proj (E, hidden, inter)), not as nn.Linear modules: LoRA reaches them only through
    # `target_parameters` (peft's ParamWrapper). The router (mlp.gate) and attention are ordinary Linear layers.
    "tiny-moe": {
        "config_class": "MixtralConfig",
        "model_class": "MixtralForCausalLM",
        "config": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_local_experts=4,
            num_experts_per_tok=2,
            vocab_size=1000,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate"],
        "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
    },
    # Shaped like real small checkpoints (their published configs; random seeded weights, no download), for
    # serving figures at realistic sizes. 135M parameters (about 540 MB in fp32) and 494M (about 2 GB).
    "smollm2-135m-shape": {
        "config_class": "LlamaConfig",
        "model_class": "LlamaForCausalLM",
        "config": dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            max_position_embeddings=8192,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
    "qwen2.5-0.5b-shape": {
        "config_class": "Qwen2Config",
        "model_class": "Qwen2ForCausalLM",
        "config": dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
}
BUILTIN_SEED = 1234


@dataclass(frozen=True)
class ResolvedModel:
    source: str  # as the scenario wrote it
    location: str  # what from_pretrained receives: a local folder or a Hub id
    kind: str  # "builtin" | "local" | "hub"
    fingerprint: str  # identifies the weights, for adapter cache keys
    built_now: bool = False


_HUB_MODEL_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def resolve_model(source: str, cache_root: Path) -> ResolvedModel:
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        if name not in BUILTIN_MODELS:
            raise ValueError(f"unknown built-in model {name!r}; built-in: {', '.join(BUILTIN_MODELS)}")
        spec = {"name": name, "seed": BUILTIN_SEED, **BUILTIN_MODELS[name]}
        folder, built = cached_folder(cache_root, "models", name, spec, lambda tmp: _build(name, tmp))
        return ResolvedModel(source, str(folder), "builtin", folder.name, built)
    path = Path(source).expanduser()
    if local_path_exists(path, f"model {source!r}"):
        if not path.is_dir():
            raise FileNotFoundError(f"model {source!r}: {path} is not a folder (a saved transformers model)")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model {source!r}: folder {path} has no config.json")
        return ResolvedModel(source, str(path.resolve()), "local", _folder_fingerprint(path))
    # A Hub id is NAME or OWNER/NAME; anything else that does not exist locally is a missing path.
    if source.startswith((".", "/", "~")) or not _HUB_MODEL_RE.match(source):
        raise FileNotFoundError(f"model {source!r}: path does not exist")
    return ResolvedModel(source, source, "hub", f"hub:{source}")


def local_path_exists(path: Path, what: str) -> bool:
    """Whether `path` is there. A symbolic link loop (ELOOP) is not there either, but is no Hub id: it is the
    user's broken link, an input error naming it (issue 32: it was sent to the Hub, or its load `fail`ed)."""
    try:
        os.stat(path)
    except ValueError:  # a NUL in the name, as Path.exists
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BenchInputError(
                f"path {path} is a symbolic link loop (following its links never reaches a file or folder)",
                source=what,
            ) from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF):  # what Path.exists calls not there
            return False
        raise
    return True


def _folder_fingerprint(path: Path) -> str:
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _build(name: str, out: Path) -> None:
    import torch
    import transformers

    entry = BUILTIN_MODELS[name]
    config = getattr(transformers, entry["config_class"])(**entry["config"])
    # A private generator state: the weights depend on the seed only, not on what ran before in the process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILTIN_SEED)
        model = getattr(transformers, entry["model_class"])(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    (out / "bench-model.json").write_text(json.dumps({"builtin": name, "seed": BUILTIN_SEED}, indent=2))
