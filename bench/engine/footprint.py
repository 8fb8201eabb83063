"""Static sizes: the model's parameters and buffers, quantisation state, adapter files; the copy floor."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.engine.probes.clock import Clock
from bench.results.records import Footprint


def _tensor_bytes(t) -> int:
    return t.numel() * t.element_size()


def quant_state_bytes(model) -> int:
    """bitsandbytes keeps per-block scales beside the packed weights (Params4bit.quant_state, Int8Params.SCB);
    get_memory_footprint() counts parameters and buffers only."""
    import torch

    total = 0
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            for v in qs.as_dict(packed=False).values() if hasattr(qs, "as_dict") else ():
                if isinstance(v, torch.Tensor):
                    total += _tensor_bytes(v)
        scb = getattr(p, "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += _tensor_bytes(scb)
    return total


def model_footprint(model, adapter_bytes: dict[str, int]) -> Footprint:
    return Footprint(
        param_bytes=sum(_tensor_bytes(p) for p in model.parameters()),
        buffer_bytes=sum(_tensor_bytes(b) for b in model.buffers()),
        memory_footprint_bytes=int(model.get_memory_footprint()),
        quant_state_bytes=quant_state_bytes(model),
        adapter_bytes=dict(adapter_bytes),
    )


def adapter_file_bytes(location: str) -> int | None:
    """Bytes of tensor data in an adapter's safetensors file (header excluded); None without one (pickle
    weights, allowed by --allow-pickle, are not measured: 0 would be a made-up figure)."""
    from safetensors import safe_open

    path = Path(location) / "adapter_model.safetensors"
    if not path.is_file():
        return None
    total = 0
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            sl = f.get_slice(name)
            shape = sl.get_shape()
            n = 1
            for d in shape:
                n *= d
            total += n * _dtype_size(sl.get_dtype())
    return total


def _dtype_size(dtype: str) -> int:
    return {
        "F64": 8,
        "F32": 4,
        "F16": 2,
        "BF16": 2,
        "I64": 8,
        "I32": 4,
        "I16": 2,
        "I8": 1,
        "U8": 1,
        "BOOL": 1,
        "F8_E4M3": 1,
        "F8_E5M2": 1,
    }.get(dtype, 4)


def copy_floor_ms(n_bytes: int, device: str, clock: Clock, rounds: int = 21) -> float:
    """Median time of a plain tensor copy of n_bytes on the device: what no swap of those bytes can beat."""
    import torch

    src = torch.ones(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: first touch of the pages
    samples = [clock.time_ms(lambda: dst.copy_(src))[0] for _ in range(rounds)]
    return statistics.median(samples)
