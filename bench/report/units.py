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


# Numbers from 1000 up to this print whole (6810, 19,900x, not 6.81e+03); beyond it with an exponent: a
# latency of 1e300 (an edited file) printed 301 digits, which the cell's clipping then cut short.
WHOLE_BELOW = 1e9


def number_text(v: float) -> str:
    """A time or count for a table cell: 3 significant digits, whole from 1000 to WHOLE_BELOW."""
    return f"{v:.0f}" if 1000 <= abs(v) < WHOLE_BELOW else f"{v:.3g}"


def ratio_text(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}x" if 1000 <= v < WHOLE_BELOW else f"{v:.{digits}g}x"
