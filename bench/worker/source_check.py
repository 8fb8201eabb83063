"""Checks on model and adapter files before a case uses them: each failure is that case's `error`, with why.

What is checked, and why here rather than left to the library:
- weights are safetensors; pickle files (pytorch_model.bin, adapter_model.bin) can run code when loaded, so
  they are refused unless the user allows them (--allow-pickle, scenario.allow_pickle = true);
- every safetensors header parses and covers the file (a truncated or corrupt file is named, not reported as
  a deserialisation error deep inside from_pretrained);
- an adapter fits the loaded base model: every LoRA tensor names a module the model has, with the model's
  feature sizes. transformers drops keys for modules it does not find without an error, so an adapter made
  for another model could load as a partial no-op;
- a hotswap swaps in a LoRA adapter: the transformers path accepts an IA3 or LoHa adapter into a LoRA slot
  without an error and loads none of its weights.
A step that expects the library to raise (expect.raises) is left to the library: the scenario tests that.
Only headers are read (safe_open), never tensor data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.ops import OPS

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ALLOW_PICKLE_HINT = (
    "convert them to safetensors, or allow them with --allow-pickle or scenario.allow_pickle = true"
)
# `.base_layer` repeats where LoRA on parameters (target_parameters) nests one wrapper per targeted parameter
# of a module (bench/engine/oracle_params.py): the key names the module that owns them.
_LORA_KEY_RE = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)(?:\.base_layer)*\.lora_(?P<ab>[AB])\.weight$"
)


class SourceError(Exception):
    """A model or adapter source this case cannot use as its scenario says."""


def _header_error(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                f.get_slice(name).get_shape()
    except Exception as exc:  # safetensors raises its own SafetensorError, and OSError for I/O
        return " ".join(str(exc).split())[:300] or type(exc).__name__
    return None


def _pickles(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def remote_code(folder: Path) -> list[str]:
    """The Python modules a model folder's config.json maps its classes to (auto_map), when transformers has
    no class of its own for the model_type: loading it would import those modules."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []  # from_pretrained reports an unreadable config itself
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(auto_map, dict) or not auto_map:
        return []
    from transformers import CONFIG_MAPPING

    if config.get("model_type") in CONFIG_MAPPING:
        return []  # transformers uses its own class unless trust_remote_code is set
    refs = [v for value in auto_map.values() for v in (value if isinstance(value, list) else [value])]
    return sorted({str(v) for v in refs if v})


def check_model_files(
    source: str, location: str, kind: str, *, allow_pickle: bool, trust_remote_code: bool = False
) -> None:
    """A local or built-in model folder: no code of its own unless trusted; safetensors weights with sound
    headers, or allowed pickles."""
    if kind not in ("builtin", "local"):
        return  # a Hub id: from_pretrained(use_safetensors=True) refuses pickle-only repositories itself
    folder = Path(location)
    code = [] if trust_remote_code else remote_code(folder)
    if code:
        raise SourceError(
            f"model {source!r} ({folder}): its config.json maps to its own Python code ({', '.join(code)}), "
            "which would run when the model loads; refused unless you opt in with --trust-remote-code or "
            "scenario.trust_remote_code = true"
        )
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = _pickles(folder)
        if not pickles:
            raise SourceError(f"model {source!r} ({folder}): no weights file (*.safetensors) in the folder")
        if not allow_pickle:
            raise SourceError(
                f"model {source!r} ({folder}): its weights are pickle files ({', '.join(pickles)}), refused "
                f"because loading a pickle can run code; {ALLOW_PICKLE_HINT}"
            )
        return
    for path in weights:
        error = _header_error(path)
        if error:
            raise SourceError(
                f"model {source!r}: {path} is not a valid safetensors file (truncated or corrupt): {error}"
            )


def read_adapter_config(key: str, folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(
            f"adapter {key!r}: {folder} has no adapter_config.json (not a PEFT adapter)"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"adapter {key!r}: {path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise SourceError(f"adapter {key!r}: {path} has no peft_type (not a PEFT adapter config)")
    return config


def check_adapter_files(key: str, location: str, kind: str, *, allow_pickle: bool) -> str | None:
    """A local or generated adapter folder: its config and weights. Returns its peft_type (None for Hub ids)."""
    if kind not in ("generated", "local"):
        return None
    folder = Path(location)
    config = read_adapter_config(key, folder)
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        error = _header_error(weights)
        if error:
            raise SourceError(
                f"adapter {key!r}: {weights} is not a valid safetensors file (truncated or corrupt): {error}"
            )
        return config["peft_type"]
    pickles = _pickles(folder)
    if not pickles:
        raise SourceError(f"adapter {key!r}: {folder} has no adapter_model.safetensors")
    if not allow_pickle:
        raise SourceError(
            f"adapter {key!r} ({folder}): its weights are pickle files ({', '.join(pickles)}), refused "
            f"because loading a pickle can run code; {ALLOW_PICKLE_HINT}"
        )
    return config["peft_type"]


def _features(module) -> tuple[int, int] | None:
    """(in_features, out_features) of a module LoRA can wrap, or None for kinds this check does not know."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    if hasattr(module, "nf") and hasattr(module, "nx"):  # transformers' Conv1D (GPT-2): weight is (nx, nf)
        return int(module.nx), int(module.nf)
    return None


def lora_misfits(model, location: str) -> list[str]:
    """Why the LoRA tensors of an adapter's safetensors file do not fit `model` (empty when they fit)."""
    from safetensors import safe_open

    modules = dict(model.named_modules())
    problems: list[str] = []
    with safe_open(str(Path(location) / "adapter_model.safetensors"), framework="pt") as f:
        for name in sorted(f.keys()):
            m = _LORA_KEY_RE.match(name)
            if not m:
                continue
            module = modules.get(m.group("module"))
            if module is None:
                problems.append(f"{m.group('module')} is not a module of this model")
                continue
            features = _features(module)
            if features is None:
                continue
            shape = list(f.get_slice(name).get_shape())
            in_features, out_features = features
            if m.group("ab") == "A" and (len(shape) != 2 or shape[1] != in_features):
                problems.append(f"{name} has shape {shape}, the model's module takes {in_features} inputs")
            if m.group("ab") == "B" and (len(shape) != 2 or shape[0] != out_features):
                problems.append(f"{name} has shape {shape}, the model's module gives {out_features} outputs")
    return problems


def check_adapter_fits(key: str, location: str, model, base: str) -> None:
    problems = list(dict.fromkeys(lora_misfits(model, location)))  # lora_A and lora_B name a module twice
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SourceError(
            f"adapter {key!r} does not fit model {base!r} (made for another base model?): "
            + "; ".join(problems[:3])
            + more
        )


def loaded_by_steps(steps) -> set[str]:
    """Adapter keys some step loads into the model while expecting success (a step with expect.raises tests
    the refusal)."""
    return {s.adapter for s in steps if OPS[s.op].loads_into_model and s.adapter and s.expect.raises is None}


def check_hotswap_types(steps, peft_types: dict[str, str | None]) -> None:
    for step in steps:
        if not (OPS[step.op].loads_into_model and step.hotswap and step.expect.raises is None):
            continue
        kind = peft_types.get(step.adapter)
        if kind is not None and kind != "LORA":
            raise SourceError(
                f"{step.label}: hotswap needs a LoRA adapter, but adapter {step.adapter!r} is {kind} "
                "(peft_type in its adapter_config.json); set expect.raises to test the library's refusal"
            )


def check_adapter_sources(scenario, resolved: dict, *, allow_pickle: bool) -> dict[str, str | None]:
    """The adapter file checks, before the model is loaded. Returns each adapter's peft_type (None: Hub id)."""
    peft_types = {
        key: check_adapter_files(key, r.location, r.kind, allow_pickle=allow_pickle)
        for key, r in resolved.items()
    }
    check_hotswap_types(scenario.steps, peft_types)
    return peft_types


def check_adapters_fit(scenario, model, resolved: dict, peft_types: dict[str, str | None]) -> None:
    """After the model is loaded: every LoRA adapter a step loads fits it."""
    for key in sorted(loaded_by_steps(scenario.steps)):
        r = resolved.get(key)
        if r is None or peft_types.get(key) != "LORA":
            continue
        if (Path(r.location) / "adapter_model.safetensors").is_file():
            check_adapter_fits(key, r.location, model, scenario.model)
