"""The math oracle for many adapters at once, each alone on its own rows of one batch (a serve step's check).

A serve step checks every served adapter's library reference against the math oracle on the same prompts.
Merging each adapter into one base in turn (MathOracle.one_base) costs, per adapter, a B @ A over every target
weight, an exact undo with a checksum of the base, and a forward of its own: 9.8 s of a 25.5 s check for the
135M shape's eight adapters (reports/performance/serving_check.md). Here the base is loaded once and never
changed: a forward hook on each target layer adds `scaling * (x @ A.T) @ B.T` of a row's adapter to that row's
output, and the adapters' prompts go through the model together, adapter k on rows k*P .. k*P + P - 1. No
weight is edited, so nothing is undone; the hooks are removed after each call.

This is still the math oracle: no peft code runs, and its inputs are the adapter files (read by
method_files.read_any_adapter, as the merge path reads them) and the plain base. It is the unmerged form of
the same sum, what the quantized precisions' hooks already compute (math_oracle._hook_deltas), and the
library's own arithmetic order, so its distance to a right library reference is smaller than the merge's
(tests/engine/test_oracle_rows.py measures both against ORACLE_RTOL's fp32 bound). It is used only where
that was measured: fp32, and adapters whose every delta is a low-rank product on a Linear or Conv1D layer
(LoRA, AdaLoRA). DoRA, IA3, modules_to_save, embedding and parameter targets, and the other precisions go the
merge path (`refusal` says why).
"""

from __future__ import annotations

from typing import Any

from bench.engine.lora_files import AdapterWeights

# Rows per model call: the adapters are taken in groups whose prompts fill at most this many rows (at least
# one adapter per call), so a step with many adapters never holds every row's logits at once.
ROWS_PER_CALL = 32


def refusal(precision: str, adapters: dict[str, AdapterWeights], modules: dict[str, Any]) -> str | None:
    """Why these adapters cannot be computed on rows (the merge path is used), or None where they can."""
    if precision != "fp32":
        return f"{precision}: the rows form is measured against its bound for fp32 only"
    for key, a in adapters.items():
        if a.ia3 or a.saved_copies or a.params or a.embedding:
            return f"{key}: not only low-rank deltas on linear layers (IA3, modules_to_save, embedding or parameters)"
        for lora in a.lora:
            if lora.magnitude is not None:
                return f"{key}: DoRA ({lora.module})"
            kind = type(modules.get(lora.module)).__name__
            if kind not in ("Linear", "Conv1D"):
                return f"{key}: {lora.module} is a {kind}, not a Linear or Conv1D"
    return None


def groups(keys: list[str], prompts: int, rows: int | None = None) -> list[list[str]]:
    """`keys` in order, cut into groups of at most max(1, rows // prompts) adapters (rows: ROWS_PER_CALL)."""
    size = max(1, (ROWS_PER_CALL if rows is None else rows) // max(1, prompts))
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def _hook(pieces: list[tuple[slice, float, Any, Any]]):
    """A forward hook adding, on each piece's rows, scaling * (x @ A.T) @ B.T to the layer's output. (Two batched
    matmuls over stacked adapters instead of the loop measured no faster on the 135M shape: the hooks cost
    about 0.5 s a call beside 3.3 s of the base's own forward, mostly the low-rank products themselves.)"""

    def hook(module, args, out):
        x = args[0]
        for rows, scaling, a, b in pieces:
            out[rows] += ((x[rows] @ a.T) @ b.T) * scaling
        return out

    return hook


def logits_on_rows(model, adapters: dict[str, AdapterWeights], input_ids) -> dict[str, Any]:
    """Each adapter's logits [P, seq_len, vocab] on `input_ids` [P, seq_len], computed from `model` (the plain
    base, left as it was) with that adapter alone; adapters in `groups`, one model call per group."""
    import torch

    modules = dict(model.named_modules())
    prompts = input_ids.shape[0]
    out: dict[str, Any] = {}
    for group in groups(list(adapters), prompts):
        per_module: dict[str, list] = {}
        for k, key in enumerate(group):
            rows = slice(k * prompts, (k + 1) * prompts)
            for lora in adapters[key].lora:
                device = modules[lora.module].weight.device
                per_module.setdefault(lora.module, []).append(
                    (rows, lora.scaling, lora.A.to(device), lora.B.to(device))
                )
        handles = [modules[name].register_forward_hook(_hook(p)) for name, p in per_module.items()]
        try:
            with torch.no_grad():
                batch = input_ids.repeat(len(group), 1)
                logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits.float().cpu()
        finally:
            for handle in handles:
                handle.remove()
        for k, key in enumerate(group):
            out[key] = logits[k * prompts : (k + 1) * prompts]
    return out


def each_alone(math, keys: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(key -> logits of `math`'s inputs with that adapter alone, None), computed on rows from one fresh plain
    base; or (None, why not) where `refusal` sends these adapters to the merge path. `math`: a MathOracle."""
    if math.precision != "fp32":  # refused before a base is loaded for nothing
        return None, refusal(math.precision, {}, {})
    model = math.plain_base()
    modules = dict(model.named_modules())
    adapters = {key: math.adapter(key, modules) for key in keys}
    if why := refusal(math.precision, adapters, modules):
        return None, why
    return logits_on_rows(model, adapters, math.inputs.input_ids), None
