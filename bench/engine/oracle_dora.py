"""DoRA for the math oracle: the merged weight a DoRA adapter gives, computed without peft.

Written from the DoRA paper (arXiv 2402.09353, eq. 5) and PEFT's layer, in our own code. A DoRA target holds the
LoRA pair (A, B), its scaling s and a magnitude vector m with one entry per output row. Its weight is

    W' = m * (W + s * B @ A) / ||W + s * B @ A||_row

with the norm taken over each output row (the (out, in) layout; peft's `torch.linalg.norm(weight, dim=1)`
after the fan_in_fan_out transpose). peft detaches that norm from the gradient graph (the paper's section
4.3): that changes training, never the forward value the oracle computes. W' equals plain LoRA's W + s B A
exactly when m is that row norm, which is peft's init; a trained magnitude differs.

peft adds a DoRA adapter to whatever the layer's running output holds: a second adapter active on the same
module (DoRA or LoRA) is rescaled by the DoRA factor or not depending on the order. The oracle refuses that
state (dora_conflict) rather than pick an order and call it the reference.
"""

from __future__ import annotations

from typing import Any


def dora_weight(weight, lora, *, transposed: bool):
    """m * (W + s B A) / ||W + s B A||_row in fp32, laid out like `weight` ((in, out) when transposed)."""
    import torch

    w = weight.float().T if transposed else weight.float()
    merged = w + lora.scaling * (lora.B @ lora.A)
    norm = torch.linalg.vector_norm(merged, dim=1, keepdim=True)
    out = lora.magnitude.view(-1, 1) * merged / norm
    return out.T if transposed else out


def dora_conflict(adapters: list[Any], *, quantized: bool) -> str | None:
    """Why the oracle cannot compute these active adapters' DoRA (a quantized base, or a DoRA module that holds
    another active adapter), or None."""
    if quantized and any(lora.magnitude is not None for adapter in adapters for lora in adapter.lora):
        return "DoRA on a quantized base: the math oracle merges DoRA into floating-point weights only"
    owners: dict[str, list[tuple[str, bool]]] = {}
    for adapter in adapters:
        for lora in adapter.lora:
            owners.setdefault(lora.module, []).append((adapter.location, lora.magnitude is not None))
    for module, held in sorted(owners.items()):
        if len(held) > 1 and any(dora for _, dora in held):
            return (
                f"module {module!r} holds a DoRA adapter and another active adapter: peft rescales the running "
                "output, so the result depends on the order; the math oracle computes one DoRA adapter per module"
            )
    return None
