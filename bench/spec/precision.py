"""Precisions: how each is loaded (the way a user passes it), whether it can run here, and its tolerance.

Tolerances are the one place that says how close a compiled or swapped model's output must be to the eager
reference. Each has its reason; the tests measure real differences against them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from bench.spec.host import fact_holds
from bench.spec.schema import QuantOptions


@dataclass(frozen=True)
class Tolerance:
    """|actual - reference| <= atol + rtol * |reference|, elementwise, on logits."""

    atol: float
    rtol: float
    reason: str
    rule: str = "loose"  # "exact" (same kernels, a few ulps) or "loose" (the table below)


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

# The exact rule. With an eager-family backend (no compile, eager, aot_eager) the subject runs the same
# kernels as the eager reference on the same device, so the only differences left are reorderings such as
# a rank padded with zeros (peft's prepare_model_for_compiled_hotswap). Measured on every shipped scenario
# (torch 2.13 CPU): fp32 0 to 4.5e-7 (a padded rank), bf16 / fp16 / int8 / nf4 / fp4 exactly 0 wherever
# the model's weights were not changed by a bitsandbytes bug (docs/precisions.md). The bound is n machine
# epsilons of the output dtype times the reference's logit magnitude max(1, max|ref|): fp32 8 eps = 9.5e-7;
# the 16-bit dtypes (and 4/8-bit weights, which compute in bf16 or fp16) 1 eps, one rounding step at a logit
# of 1, since their outputs measured bit-identical.
EXACT_BACKENDS = ("none", "eager", "aot_eager")
EXACT_EPS = {"fp32": 8.0, "bf16": 1.0, "fp16": 1.0, "int8": 1.0, "nf4": 1.0, "fp4": 1.0}
# The loose rule (inductor fuses and reorders; quantized kernels on an accelerator pick their own paths):
# TOLERANCES, with atol scaled to the reference's logit magnitude max(1, max|ref|).


def tolerance_for(
    precision: str,
    backend: str,
    device: str,
    ref_max_abs: float,
    quant: QuantOptions | None = None,
    *,
    base_rounded: bool = False,
) -> Tolerance:
    """The bound a model call's logits are held to, from the precision AND the backend the call ran on.
    `base_rounded`: a merge wrote the adapter into the base weights in the model's dtype (AdapterState):
    the subject then computes with other weights than the unmerged reference, and only the loose rule holds
    (measured: bf16 merge on tiny-llama 0.0072, 0.92x the exact rule's bound; a larger model exceeds it)."""
    import torch

    scale = max(1.0, float(ref_max_abs))
    quantized = precision in QUANTIZED
    if backend in EXACT_BACKENDS and not (quantized and device != "cpu") and not base_rounded:
        dtype_name = (quant or QuantOptions()).compute_dtype if quantized else precision
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
        n = EXACT_EPS[precision]
        return Tolerance(
            atol=n * torch.finfo(dtype).eps * scale,
            rtol=0.0,
            reason=f"{backend} runs the eager reference's kernels on {device}: {n:g} eps({dtype_name}) x "
            f"max(1, max|ref|) = {scale:.3g}",
            rule="exact",
        )
    loose = TOLERANCES[precision]
    if base_rounded:
        why = (
            f"a merge rounded W + scaling * B @ A to the model's dtype ({precision}), so the subject computes "
            "with other weights than the unmerged reference; the precision's loose rule"
        )
    elif backend not in EXACT_BACKENDS:
        why = "inductor fuses kernels"
    else:
        why = f"quantized kernels on {device}"
    return Tolerance(
        atol=loose.atol * scale,
        rtol=loose.rtol,
        reason=(
            f"{why} (atol {loose.atol:g}, rtol {loose.rtol:g}) x max(1, max|ref|) = {scale:.3g}"
            if base_rounded
            else f"{why}: {loose.reason}; atol x max(1, max|ref|) = {scale:.3g}"
        ),
        rule="loose",
    )


# A state change must move the reference's logits by more than this many times the step's tolerance
# somewhere (element-wise, the same atol + rtol rule), or the output check cannot tell the new state from
# the old: a subject that skipped the op would pass. 5x leaves a wrong state no room to hide inside it.
DISTINGUISH_FACTOR = 5.0

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
    return {
        "quantization_config": qc,
        "device_map": device_map(device, torch.cuda.device_count()),
        "dtype": compute,
    }


def device_map(device: str, cuda_devices: int) -> str | dict[str, str]:
    """device_map="auto" as the guide shows, where it puts everything on `device`: the only device there is
    (a CPU host, or a host with one GPU and device cuda). Elsewhere "auto" would go where the case did not ask,
    and the whole model goes to the one device named: several GPUs would shard it, and a CPU load in a
    process that sees a GPU lands on cuda:0 beside CPU inputs (the tests' oracles on an H200; a repro script
    with DEVICE 'cpu'. A `--device cpu` worker hides the GPUs itself, bench.worker.__main__)."""
    return "auto" if cuda_devices == (0 if device == "cpu" else 1) else {"": device}


def needs_eager_forward_after_state_dict(precision: str, device: str) -> bool:
    """bitsandbytes on a CPU with avx512_bf16 repacks 4-bit weights on the first eager forward, and any
    state_dict() call (both hotswap paths make one) unpacks them again: the next compiled call then
    recompiles on a size guard. One eager forward after such a call restores the packed layout. The harness
    makes that call and says so in the step's notes, so a strict step measures the swap, not the repacking.
    Where bitsandbytes does not repack (no avx512_bf16, CUDA) there is nothing to restore."""
    return repacks_on_first_forward(precision, device)


def repacks_on_first_forward(precision: str, device: str) -> bool:
    """Whether a model loaded in `precision` rewrites its own 4-bit weights on its first eager forward here
    (bitsandbytes on a CPU with avx512_bf16: bench.spec.host)."""
    return precision in ("nf4", "fp4") and fact_holds("bnb_cpu_packs_4bit", device)
