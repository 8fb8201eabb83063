"""Precisions: how each is loaded (the way a user passes it), whether it can run here, and its tolerance.

Tolerances are the one place that says how close a compiled or swapped model's output must be to the eager
reference. Each has its reason; the tests measure real differences against them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tolerance:
    """|actual - reference| <= atol + rtol * |reference|, elementwise, on logits."""

    atol: float
    rtol: float
    reason: str


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(
        1e-4, 1e-4, "fp32 differs from eager only by kernel order (compile fuses ops); ~1e-6 seen"
    ),
    "bf16": Tolerance(5e-2, 2e-2, "bf16 has an 8-bit mantissa: one rounding step at |logit|~4 is 0.016"),
    "fp16": Tolerance(1e-2, 5e-3, "fp16 has a 10-bit mantissa; fused kernels reorder sums"),
    "int8": Tolerance(
        5e-2, 2e-2, "int8 matmul rounds activations per row; compiled and eager outlier paths differ"
    ),
    "nf4": Tolerance(
        5e-2, 2e-2, "4-bit weights dequantised to the bf16 compute dtype; bf16 rounding dominates"
    ),
    "fp4": Tolerance(
        5e-2, 2e-2, "4-bit weights dequantised to the bf16 compute dtype; bf16 rounding dominates"
    ),
}

# An adapter must move the output by more than this many times the tolerance, or the scenario is testing
# nothing: every check against a reference would pass for a no-op adapter.
ADAPTER_EFFECT_FACTOR = 10.0

QUANTIZED = ("int8", "nf4", "fp4")


def unavailable_reason(precision: str, device: str) -> str | None:
    """Why a precision cannot run here (the case is then a skip), or None."""
    if precision in QUANTIZED and importlib.util.find_spec("bitsandbytes") is None:
        return f"{precision} needs bitsandbytes, which is not installed (pip install 'peft-bench[quant]')"
    return None


def load_kwargs(precision: str, device: str) -> dict[str, Any]:
    """Keyword arguments for from_pretrained, as a user writes them."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision in dtypes:
        return {"dtype": dtypes[precision]}
    from transformers import BitsAndBytesConfig

    if precision == "int8":
        qc = BitsAndBytesConfig(load_in_8bit=True)
    else:
        qc = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=precision,
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=False,
        )
    return {
        "quantization_config": qc,
        "device_map": "auto" if device == "cuda" else {"": device},
        "dtype": torch.bfloat16,
    }
