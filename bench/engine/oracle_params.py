"""LoRA on nn.Parameters (peft's `target_parameters`) read from an adapter's files alone, for the math oracle.

A mixture of experts keeps its experts' weights as fused 3-D Parameters, not Linear modules; peft reaches them
by name (`target_parameters = ["mlp.experts.gate_up_proj", ...]`, its ParamWrapper). The rules below are
written from peft 0.21's ParamWrapper source in our own words, and checked against peft's outputs
(tests/engine/test_oracle_params.py):

- targets: for each module of the plain base model, each of its own parameters (not its children's), in the
  order the module registered them, is a target when `<module>.<param>` equals an entry or ends in
  `.<entry>`;
- nesting: a module with k targeted parameters p_0 .. p_{k-1} is wrapped k times, p_0 innermost, so p_j's
  weights are saved under `<module>` + `.base_layer` x (k - 1 - j) + `.lora_A.weight` / `.lora_B.weight`;
- shapes: a 3-D parameter holds E experts, stored (E, out, in) as transformers' MoE experts keep them, or
  (E, in, out) when the module says `is_transposed`; a 2-D one is (out, in) with E = 1. A is (r E, in) with
  expert e's rows at e r .. (e + 1) r (blocked); B is (out, r E) with expert e's columns at e, e + E,
  e + 2E, ... (interleaved);
- the delta of expert e is scaling * B_e @ A_e, (out, in), added to the parameter's slice e (transposed when
  `is_transposed`); scaling = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.

What these rules do not cover is refused by name (a BenchInputError: the step says `unverified` with it):
rank_pattern / alpha_pattern beside target_parameters, a parameter of another rank than 2 or 3.
It imports no peft module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchInputError

_PREFIX = "base_model.model."


@dataclass(frozen=True)
class ParamLora:
    module: str  # the module that owns the parameter, e.g. model.layers.0.mlp.experts
    param: str  # its attribute name, e.g. gate_up_proj
    A: Any  # (rank * experts, in) fp32, as saved
    B: Any  # (out, rank * experts) fp32, as saved
    experts: int
    transposed: bool  # the parameter is stored (E, in, out)
    rank: int
    alpha: float
    scaling: float

    def delta(self):
        """scaling * B_e @ A_e per expert, in fp32, laid out like the parameter."""
        import torch

        if self.experts == 1:
            return self.scaling * (self.B @ self.A)
        a = self.A.reshape(self.experts, self.rank, self.A.shape[-1])  # (E, r, in): blocked rows
        b = self.B.reshape(self.B.shape[0], self.rank, self.experts).permute(
            2, 0, 1
        )  # (E, out, r): interleaved
        delta = self.scaling * torch.bmm(b, a)  # (E, out, in)
        return delta.transpose(1, 2) if self.transposed else delta


def _matches(key: str, entries) -> bool:
    return any(key == t or key.endswith(f".{t}") for t in entries)


def parameter_targets(config: dict[str, Any], modules: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Every saved key of a parameter target: key -> (module, parameter, "A" | "B"). Empty without
    target_parameters."""
    entries = config.get("target_parameters") or []
    keys: dict[str, tuple[str, str, str]] = {}
    for name, module in modules.items():
        params = [p for p, _ in module.named_parameters(recurse=False) if _matches(f"{name}.{p}", entries)]
        for j, param in enumerate(params):
            wrapped = name + ".base_layer" * (len(params) - 1 - j)
            for part in ("A", "B"):
                keys[f"{_PREFIX}{wrapped}.lora_{part}.weight"] = (name, param, part)
    return keys


def read_param_loras(
    config: dict[str, Any], modules: dict[str, Any], weights_path: Path
) -> tuple[ParamLora, ...]:
    """The parameter targets' LoRA weights, read from the adapter's safetensors file (the keys
    `parameter_targets` names; lora_files.read_adapter checks every other key)."""
    from safetensors import safe_open

    if not config.get("target_parameters"):
        return ()
    targets = parameter_targets(config, modules)
    config_path = str(weights_path.parent / "adapter_config.json")
    for pattern in ("rank_pattern", "alpha_pattern"):
        if config.get(pattern):
            raise BenchInputError(
                "set beside target_parameters: the math oracle applies no pattern to a parameter target",
                source=config_path,
                field=pattern,
            )
    if not targets:
        raise BenchInputError(
            f"{config['target_parameters']!r} names no parameter of the base model",
            source=config_path,
            field="target_parameters",
        )
    got: dict[tuple[str, str], dict[str, Any]] = {}
    with safe_open(str(weights_path), framework="pt") as f:
        present = set(f.keys())
        for key, (module, param, part) in targets.items():
            if key not in present:
                raise BenchInputError(
                    f"missing key: parameter {module}.{param} is targeted but the file has no lora_{part}",
                    source=str(weights_path),
                    field=key,
                )
            got.setdefault((module, param), {})[part] = f.get_tensor(key).float()
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    out = []
    for (module, param), ab in sorted(got.items()):
        experts, out_features, in_features, transposed = _layout(modules[module], param)
        a, b = ab["A"], ab["B"]
        if tuple(a.shape) != (rank * experts, in_features) or tuple(b.shape) != (
            out_features,
            rank * experts,
        ):
            raise BenchInputError(
                f"shapes A {tuple(a.shape)}, B {tuple(b.shape)} do not fit rank {rank} x {experts} expert(s) and "
                f"the parameter's {in_features} -> {out_features}",
                source=str(weights_path),
                field=next(k for k, v in targets.items() if v == (module, param, "A")),
            )
        out.append(ParamLora(module, param, a, b, experts, transposed, rank, alpha, scaling))
    return tuple(out)


def _layout(module, param: str) -> tuple[int, int, int, bool]:
    """(experts, out_features, in_features, transposed) of a targeted parameter."""
    shape = tuple(getattr(module, param).shape)
    if len(shape) == 2:
        return 1, shape[0], shape[1], False
    if len(shape) != 3:
        raise BenchInputError(
            f"parameter {param} of {type(module).__name__} has {len(shape)} dimensions; LoRA on parameters "
            "covers 2 and 3",
            field="target_parameters",
        )
    transposed = bool(getattr(module, "is_transposed", False))
    experts, d1, d2 = shape
    return (experts, d2, d1, True) if transposed else (experts, d1, d2, False)


def merge_param_deltas(modules: dict[str, Any], adapters, edits) -> None:
    """Add each active adapter's parameter deltas to the plain model's parameters, in fp32 (`edits`,
    oracle_base.Edits, keeps each weight before it changes, so a shared base can be put back)."""
    for adapter in adapters:
        for lora in adapter.params:
            weight = edits.keep(getattr(modules[lora.module], lora.param))
            weight.copy_((weight.float() + lora.delta().to(weight.device)).to(weight.dtype))
