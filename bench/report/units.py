"""Byte counts and ratios as text, shared by the tables and the figures."""

from __future__ import annotations

MiB = 2**20


def size_text(v: int | None) -> str:
    """Bytes with the unit in the cell: gradients of a LoRA adapter are KiB where a full model's are MiB."""
    if v is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", MiB), ("KiB", 1024)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v} B"


def ratio_text(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}x" if v >= 1000 else f"{v:.3g}x"  # 19,900x reads better than 1.99e+04x
