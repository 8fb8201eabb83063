"""Precisions: how each is loaded (the way a user passes it), whether it can run here, and its tolerance.

Tolerances are the one place that says how close a compiled or swapped model's output must be to the eager
reference. Each has its reason; the tests measure real differences against them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from bench.scenario.schema import QuantOptions


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
# nothing: every check against a reference would pass for a no-op adapter. 5x leaves a wrong swap no room to
# hide inside the tolerance (a no-op adapter measures 0; the tests show one flagged).
ADAPTER_EFFECT_FACTOR = 5.0

QUANTIZED = ("int8", "nf4", "fp4")


def unavailable_reason(precision: str, device: str) -> str | None:
    """Why a precision cannot run here (the case is then a skip, never a fallback), or None."""
    if precision in QUANTIZED:
        if importlib.util.find_spec("bitsandbytes") is None:
            return f"{precision} needs bitsandbytes, which is not installed (pip install 'peft-bench[quant]')"
        try:
            import bitsandbytes  # noqa: F401
        except Exception as exc:  # a broken install is as unavailable as a missing one
            return f"{precision} needs bitsandbytes, which fails to import here: {type(exc).__name__}: {exc}"
    return None


def load_kwargs(precision: str, device: str, quant: QuantOptions | None = None) -> dict[str, Any]:
    """Keyword arguments for from_pretrained, as a user writes them."""
    import torch

    quant = quant or QuantOptions()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision in dtypes:
        return {"dtype": dtypes[precision]}
    from transformers import BitsAndBytesConfig

    compute = dtypes[quant.compute_dtype]
    if precision == "int8":
        qc = BitsAndBytesConfig(load_in_8bit=True)
    else:
        qc = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=precision,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=quant.double_quant,
        )
    # device_map="auto" as the guide shows; accelerate places everything on the one device there is.
    return {"quantization_config": qc, "device_map": "auto", "dtype": compute}


def needs_eager_forward_after_state_dict(precision: str, device: str) -> bool:
    """bitsandbytes on CPU repacks 4-bit weights on the first eager forward, and any state_dict() call (both
    hotswap paths make one) unpacks them again: the next compiled call then recompiles on a size guard.
    One eager forward after such a call restores the packed layout. The harness makes that call and says so
    in the step's notes, so a strict step measures the swap, not the repacking."""
    return precision in ("nf4", "fp4") and device == "cpu"
