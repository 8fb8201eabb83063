"""AdaLoRA and IA3 adapters read from their files alone, for the math oracle (LoRA's reader: lora_files.py).

Written from PEFT's documentation and layer code, in our own words, so that a bug in peft's loading cannot reach
the oracle:

- AdaLoRA (peft_type ADALORA): per target, lora_A (r, in), lora_E (r, 1) and lora_B (out, r), saved without the
  adapter name and without ".weight". The layer adds (x @ (A * E).T @ B.T) * scaling / (ranknum + 1e-5), where
  scaling = lora_alpha (init_r when lora_alpha is 0: the rank the layers were built with) and ranknum = init_r.
  That is a LoRA delta with A' = A * E and scaling' = scaling / (init_r + 1e-5): it is returned as one.
- IA3 (peft_type IA3): per target one vector ia3_l; a `feedforward_modules` target rescales its input
  (y = W (x * l), the vector is (1, in)), any other its output (y = (W x) * l, the vector is (out, 1)). Both are
  W * l with broadcasting. Several active IA3 adapters multiply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.engine.lora_files import (
    _PREFIX,
    CONFIG_FILE,
    AdapterWeights,
    Ia3Vector,
    LoraModule,
    _features,
    config_targets,
    is_conv1d,
    is_targeted,
    read_adapter,
    read_config,
)
from bench.errors import BenchInputError


def read_any_adapter(location: str, modules: dict[str, Any]) -> AdapterWeights:
    """LoRA, AdaLoRA or IA3, by the folder's peft_type."""
    folder = Path(location)
    config = read_config(folder)
    if config["peft_type"] == "LORA":
        return read_adapter(location, modules)
    weights_path = folder / "adapter_model.safetensors"
    if not weights_path.is_file():
        raise BenchInputError(f"no {weights_path.name} in {folder}", source=str(weights_path))
    read = read_ia3 if config["peft_type"] == "IA3" else read_adalora
    return read(folder, config, modules, weights_path)


def _tensors(weights_path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(weights_path), framework="pt") as f:
        return {k: f.get_tensor(k).float() for k in f.keys()}


def _targets(config: dict[str, Any], modules: dict[str, Any], weights_path: Path) -> list[str]:
    names = sorted(n for n in modules if config_targets(config, n))
    targets = [n for n in names if hasattr(modules[n], "weight") and hasattr(modules[n], "in_features")]
    conv = [n for n in names if is_conv1d(modules[n])]
    if conv:
        raise BenchInputError(
            f"targets Conv1D {conv[0]!r}: the math oracle computes {config['peft_type']} on Linear layers only",
            source=str(weights_path.parent / CONFIG_FILE),
            field="target_modules",
        )
    return targets


def _expect_keys(tensors: dict[str, Any], wanted: set[str], weights_path: Path) -> None:
    extra = sorted(set(tensors) - wanted)
    if extra:
        raise BenchInputError(
            "unknown key: not a weight of a targeted module", source=str(weights_path), field=extra[0]
        )
    missing = sorted(wanted - set(tensors))
    if missing:
        raise BenchInputError(
            "missing key: a targeted module has no such weight", source=str(weights_path), field=missing[0]
        )


def read_adalora(
    folder: Path, config: dict[str, Any], modules: dict[str, Any], weights_path: Path
) -> AdapterWeights:
    tensors = _tensors(weights_path)
    targets = _targets(config, modules, weights_path)
    _expect_keys(tensors, {f"{_PREFIX}{m}.lora_{p}" for m in targets for p in "ABE"}, weights_path)
    init_r = int(config.get("init_r") or config["r"])
    alpha = float(config["lora_alpha"])
    # peft builds the layers with r = init_r: lora_alpha 0 falls back to that rank, not to the config's r.
    scaling = (alpha if alpha > 0 else float(init_r)) / (init_r + 1e-5)
    lora = []
    for m in targets:
        a, e, b = (tensors[f"{_PREFIX}{m}.lora_{p}"] for p in "AEB")
        out_features, in_features = _features(modules[m], config)
        if (
            tuple(a.shape) != (init_r, in_features)
            or tuple(e.shape) != (init_r, 1)
            or tuple(b.shape) != (out_features, init_r)
        ):
            raise BenchInputError(
                f"shapes A {tuple(a.shape)}, E {tuple(e.shape)}, B {tuple(b.shape)} do not fit init_r {init_r} and "
                f"the module's {in_features} -> {out_features}",
                source=str(weights_path),
                field=f"{_PREFIX}{m}.lora_A",
            )
        lora.append(LoraModule(m, a * e, b, init_r, alpha, scaling))
    return AdapterWeights(location=str(folder), lora=tuple(lora), saved_copies=())


def read_ia3(
    folder: Path, config: dict[str, Any], modules: dict[str, Any], weights_path: Path
) -> AdapterWeights:
    tensors = _tensors(weights_path)
    targets = _targets(config, modules, weights_path)
    _expect_keys(tensors, {f"{_PREFIX}{m}.ia3_l" for m in targets}, weights_path)
    vectors = []
    for m in targets:
        v = tensors[f"{_PREFIX}{m}.ia3_l"]
        feedforward = is_targeted(config.get("feedforward_modules"), m)
        out_features, in_features = _features(modules[m], config)
        want = (1, in_features) if feedforward else (out_features, 1)
        if tuple(v.shape) != want:
            raise BenchInputError(
                f"shape {tuple(v.shape)}, expected {want} for a {'feedforward' if feedforward else 'plain'} target",
                source=str(weights_path),
                field=f"{_PREFIX}{m}.ia3_l",
            )
        vectors.append(Ia3Vector(m, v, feedforward))
    return AdapterWeights(location=str(folder), lora=(), saved_copies=(), ia3=tuple(vectors))


def merge_ia3(module, v: Ia3Vector, edits) -> None:
    """One IA3 vector merged into a floating-point layer (`edits`: bench.engine.oracle_base.Edits, so that it
    can be undone): W * l, rows for an output vector (out, 1), columns for an input one (1, in). An output
    vector rescales the whole output, bias included: (W x + b) * l. Every built-in model's biases are 0,
    where leaving b out made no difference; a Qwen2 checkpoint's are not."""
    weight = edits.keep(module.weight)
    weight.copy_((weight.float() * v.vector).to(weight.dtype))
    if not v.feedforward and getattr(module, "bias", None) is not None:
        bias = edits.keep(module.bias)
        bias.copy_((bias.float() * v.vector.flatten()).to(bias.dtype))
