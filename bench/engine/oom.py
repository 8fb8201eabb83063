"""Is an exception an out-of-memory? Then it is a fault of the run (verdict `error`), not the library's answer.

Python raises MemoryError; torch's CPU allocator raises RuntimeError ("DefaultCPUAllocator: can't allocate
memory", "not enough memory"); CUDA raises torch.OutOfMemoryError ("CUDA out of memory"). The memory limit a
worker runs under (RLIMIT_AS, set by --memory-limit-mb) is reported beside it.
"""

from __future__ import annotations

import resource

_OOM_TEXT = ("out of memory", "can't allocate memory", "not enough memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException | None) -> bool:
    """True for an OOM anywhere in the exception's chain (libraries often wrap it)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            return True
        if isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def memory_limit_note() -> str:
    """' (address-space limit N MiB)' when this process runs under RLIMIT_AS, else ''."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return ""
    return f" (address-space limit {soft // 2**20} MiB)"
