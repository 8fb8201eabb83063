"""`peft-bench run --require-precision nf4,int8,...`: precisions a run must really run, never skip.

A precision that cannot run here (bitsandbytes missing or broken) is a `skip` with its reason, which keeps a
run green. A CI job that exists to cover quantized cases lists them here, and the run then fails instead:
before any case starts when this machine already says so, and after the run for any required case that
was skipped all the same (a worker on another device, a failure only the worker sees).
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.errors import BenchInputError
from bench.spec.precision import unavailable_reason
from bench.spec.schema import PRECISIONS

FLAG = "--require-precision"


def parse_required(text: str | None) -> tuple[str, ...]:
    """'nf4,int8' -> ('nf4', 'int8'); an unknown name is an input error naming the flag."""
    if not text:
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in PRECISIONS]
    if unknown or not names:
        raise BenchInputError(
            f"{FLAG} {text}: unknown precision {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(PRECISIONS)}"
        )
    return names


def check_before_run(required: tuple[str, ...], selected: Iterable[str], device: str) -> None:
    """Refuse a run in which a required precision would be skipped, or is not selected at all."""
    selected = set(selected)
    problems = []
    for p in required:
        if p not in selected:
            problems.append(f"{p}: no case of the selection runs it")
        elif (why := unavailable_reason(p, device)) is not None:
            problems.append(f"{p} would be skipped: {why}")
    if problems:
        raise BenchInputError(f"{FLAG}: " + "; ".join(problems))


def skipped_required(required: tuple[str, ...], cases) -> list[str]:
    """After the run: each required case that was skipped anyway, as 'case_id: reason'."""
    return [
        f"{c.case_id}: {c.reason}"
        for c in cases
        if c.verdict == "skip" and c.params.get("precision") in required
    ]
